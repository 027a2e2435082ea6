"""Ids for agents and messages: a short prefix and eight random hex digits."""

from __future__ import annotations

import uuid


def new_id(prefix: str = "a") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
