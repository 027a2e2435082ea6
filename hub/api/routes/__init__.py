"""The API's routers, one per resource: agents, chats, threads, and the hub's own (approvals,
artifacts, usage, limits, tool servers, health).
"""
