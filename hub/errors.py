"""Every error Dispatch raises on purpose, in one tree.

    DispatchError
    ├── UserError            the user's input is at fault (names the file, field, path or id)
    │   ├── ConfigError        a config or template file is wrong
    │   ├── NotFoundError      no chat, agent, message, approval or artifact has that id (HTTP 404)
    │   │   └── UnknownAgentError  no agent has that id
    │   └── ConflictError      what the request would undo has changed since (HTTP 409)
    ├── CheckpointDenied     the user denied a checkpoint (the agent stops, failed, naming it and who)
    ├── HookBlocked          a UserPromptSubmit hook blocked a top agent's task (it fails with the reason)
    ├── HookStopped          a hook answered {"continue": false} (the agent stops, cancelled, with its stopReason)
    └── RunError             a run failed through no fault of the input
        ├── ModelCallError     the model endpoint refused or could not be reached
        │   ├── KeysExhausted    every key the model may use is exhausted for now (the agent waits)
        │   └── ContextTooLong   the request is longer than the model's context window (the agent compacts)
        ├── BudgetExceeded     an agent's subtree reached its budget_usd or max_tokens cap
        ├── StepLimitReached   an agent took as many steps as its max_steps or limits.max_steps allows
        ├── StoreFull          the data directory is full: nothing can be saved until space is freed
        └── ToolServerError    a mounted tool server failed to start or answer

Control flow (a refused summon, a cancelled agent) is not an error of this tree.
:func:`field_path` is how every ConfigError names the field at fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import cast


class DispatchError(Exception):
    """Base of every error Dispatch raises on purpose."""


class UserError(DispatchError):
    """The user's input is at fault; the message says which file, field, path or id."""


class ConfigError(UserError):
    """A config or template file is wrong; the message names the file and the field."""


def field_path(loc: Sequence[str | int], prefix: str = "") -> str:
    """Where in a config file, as a ConfigError names it: ``("keys", 0, "budget")`` after the
    prefix ``models`` is ``models.keys[0].budget``; a name with a dot or a space is quoted
    (``tags['gpt-4.1']``); no location at all is ``(top level)``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "." in part or " " in part:
            path += f"[{part!r}]"
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


class NotFoundError(UserError):
    """No chat, agent, message, approval or artifact has the given id (the API answers 404)."""


class UnknownAgentError(NotFoundError):
    """No agent has the given id."""


class ConflictError(UserError):
    """The request would overwrite something changed since (a rewind over a later edit); the
    message names what and how to force it. The API answers 409."""


class CheckpointDenied(DispatchError):
    """The user (or a remembered answer of theirs) denied an agent's checkpoint; the message names
    the checkpoint, who denied it and the approval."""


class HookBlocked(DispatchError):
    """A UserPromptSubmit hook of the config blocked the task given to a top agent; the message
    gives the hook's reason."""


class HookStopped(DispatchError):
    """A hook of the config answered ``{"continue": false}``: the agent stops, ``cancelled``, its
    reason the message (which names the event and gives the hook's ``stopReason``)."""


class RunError(DispatchError):
    """A run failed through no fault of the user's input."""


class StoreFull(RunError):
    """The disk of the data directory is full (SQLite's ``SQLITE_FULL``, or ``ENOSPC``): the
    message names the directory and says to free space there. The API answers 507; agents wait
    (``waiting_disk``) until a write succeeds again."""


class ModelCallError(RunError):
    """The model endpoint refused the call or could not be reached."""


class KeysExhausted(ModelCallError):
    """Every key the requested model may use is exhausted; the agent loop waits and retries.

    ``reason`` is what the waiting agent shows (``waiting for key until 14:00 (...)``); ``until``
    the earliest known reset, if any; ``wait()`` returns when a key is worth trying again (the
    earliest reset, or the next probe of a key whose reset is unknown).
    """

    def __init__(self, reason: str, *, until: datetime | None, wait: Callable[[], Awaitable[None]]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.until = until
        self._wait = wait

    async def wait(self) -> None:
        await self._wait()


class ContextTooLong(ModelCallError):
    """The provider refused the request as longer than the model's context window; the agent
    compacts its transcript and asks again once (:mod:`dispatch.hub.agents.compaction`)."""


class BudgetExceeded(RunError):
    """An agent's subtree spent its ``budget_usd`` or ``max_tokens``; the agent stops (reason ``budget``)."""


class StepLimitReached(RunError):
    """An agent took as many steps (model calls) as its ``max_steps`` or ``limits.max_steps`` allows
    without reporting."""


class ToolServerError(RunError):
    """A mounted tool server failed to start or to answer."""


def unwrap(error: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (task groups wrap what they carry)."""
    members: tuple[BaseException, ...] = (error,)
    while len(members) == 1:
        error = members[0]
        if not isinstance(error, BaseExceptionGroup):
            return error
        members = cast("tuple[BaseException, ...]", error.exceptions)  # pyright: ignore[reportUnknownMemberType]
    return cast(BaseException, error)
