"""The hub over HTTP and WebSocket (FastAPI), with the token and host checks.

app.py     create_app: the routers, the error mapping, the web UI's files
auth.py    the token, HubGuard (Host and Origin checks)
common.py  Body, Text: request shapes shared by the routes
events.py  the event WebSocket and its replay
routes/    one router per resource
"""
