"""Test doubles that sit at real boundaries: the scripted OpenAI-compatible model server (the
shipped scripted model's scripts, served over HTTP for the tests that cross litellm), its command
line for trying Dispatch offline, and an MCP server for the tests of outside servers."""
