"""Test doubles that sit at real boundaries (the scripted OpenAI-compatible model server)."""
