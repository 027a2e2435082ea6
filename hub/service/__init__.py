"""The hub behind its interfaces: what the HTTP API, the web UI, the MCP face and the CLI ask.

contract.py     HubService: everything an interface may do
hub.py          Hub: the service over the store, the journal, the tree, approvals and chats
delegation.py   the service calls Hub passes on to chats, approvals and records
agent_views.py  agents as views, live or stored, and each view's JSON kept until the agent changes
chats.py        ChatService: dispatch chats and their agents
threads.py      AgentThreads: detached agents' questions and the user's answers
approvals.py    Approvals: path prompts, checkpoints and tool changes put to the user
resume.py       Restorer: interrupted agents brought back from the store
changes.py      ChangeDesk: an agent's changes to files, their rewind and its undo
lifecycle.py    the data directory, the hub's lock, its log, and serving until a signal
config_watch.py ConfigWatch: edits of the config, templates and skills reach agents started afterwards
tracing.py      whether traces are sent (the standard OTEL_* variables) and where
otel_spans.py   the hub's events as OpenTelemetry spans over OTLP/HTTP (the otel extra; imported only when on)
"""
