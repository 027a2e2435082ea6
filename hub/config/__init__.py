"""What the files say: the project's and the user's config, templates, skills and permissions,
read, merged, interpolated and checked (every error names its file and field).

    files.py        Source, Loc, merge, interpolate, validate: reading YAML config files
    project.py      DispatchConfig and its sections, load_config, the config folders
    execution.py    ExecutionConfig, Placement: where agents' tool servers run (local, or Ray), and a template's steer
    outside.py      McpServerConfig: the config's ``mcp_servers`` (outside tool servers)
    hooks.py        HooksConfig: the config's ``hooks`` (commands at tool calls, in Claude Code's shape)
    permissions.py  the remembered ``always`` answers (auto-allow entries) per project
    templates.py    agent templates: load, check, narrow
    skills.py       markdown skills: index, resolve, render
    instructions.py the project's AGENTS.md and CLAUDE.md files an agent reads at start
"""
