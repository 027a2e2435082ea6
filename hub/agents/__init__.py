"""Agents: a spec, the loop that runs it, and the tree that spawns, links and budgets them.

spec.py      AgentSpec, AgentState, Caps (budget, tokens, steps), the built-in instructions
catalog.py   Catalog: templates and skills turned into specs for top agents and children
projects.py  Project: a root the hub serves, with its catalog and outside servers
loop.py      Agent: the LLM <-> MCP tool loop, as an async iterator of steps
compaction.py  what an agent sends once its transcript outgrows its model's window (the transcript kept whole)
tree.py      AgentTree: spawning, running, cancelling, and the events of every agent
link.py      TreeLink: what summon and inbox ask of the tree (children, messages, access)
scopes.py    write scopes on disk: resolved at summon, made (what is missing) when an agent starts
access.py    grants of paths outside an agent's scope, asked of the user, remembered per session
budgets.py   cost and token budgets along the ancestry
inbox.py     Inbox: an agent's waiting messages
limits.py    Limits: running-agent and model-call slots
"""
