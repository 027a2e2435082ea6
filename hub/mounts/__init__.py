"""An agent's tool servers, as an MCP client: which to mount, how to connect, one tool list.

plan.py        MountPlan: the servers one agent gets from its grants, in-process or stdio
connection.py  Connection, open_mounts: the MCP client sessions and their lifetime
toolset.py     Mounts: the agent's tools as one list, their calls routed (and tracked) to the right session
hooks.py       UserHooks: the config's hook commands, run at an agent's tool calls, messages and report; TranscriptFile
hosts.py       ToolHost, HostSession: fs, shell and lsp in a tool host (a Ray actor), their sessions over its calls
cluster.py     RayEngine: Ray's lifetime in the hub and tool hosts placed as actors (execution.engine: ray)
outside.py     OutsideServers: the hub's pool of outside MCP servers (config ``mcp_servers``)
pins.py        ToolPins: an outside server's tool list as the user approved it
untrusted.py   mark_untrusted: how outside data is fenced before the model reads it
"""
