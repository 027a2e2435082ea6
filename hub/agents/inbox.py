"""An agent's inbox: messages from the user, its parent and its children, waiting for its next
tool boundary. Anything blocking on the agent's behalf can wait for the next arrival. The agent
closes it as it gives its report: a message after that could never be read, so it is refused
(:class:`InboxClosed`) rather than taken and lost."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from dispatch.servers.hublink import InboxMessage


class InboxClosed(Exception):
    """The agent has given its report: it reads no more messages."""


class Inbox:
    """Messages in arrival order, and wake-ups for whoever waits on the next one."""

    def __init__(self) -> None:
        self._messages: list[InboxMessage] = []
        self._waiters: set[anyio.Event] = set()
        self.closed = False

    def put(self, message: InboxMessage) -> None:
        """Add a message; InboxClosed once the agent has given its report."""
        if self.closed:
            raise InboxClosed(f"the inbox is closed: message {message.id} cannot be read")
        self._messages.append(message)
        for waiter in self._waiters:
            waiter.set()
        self._waiters.clear()

    def close(self) -> None:
        """No more messages: the agent is giving its report (what waits has been read)."""
        self.closed = True

    def peek(self) -> list[InboxMessage]:
        return list(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def take(self, which: Callable[[InboxMessage], bool] | None = None) -> list[InboxMessage]:
        """Remove and return the messages ``which`` selects (all of them by default), in order."""
        if which is None:
            taken, self._messages = self._messages, []
            return taken
        taken = [m for m in self._messages if which(m)]
        self._messages = [m for m in self._messages if not which(m)]
        return taken

    async def next_arrival(self) -> None:
        """Return when the next message is put (not when one is already waiting)."""
        waiter = anyio.Event()
        self._waiters.add(waiter)
        try:
            await waiter.wait()
        finally:
            self._waiters.discard(waiter)

    async def not_empty(self) -> None:
        """Return as soon as at least one message is waiting."""
        while not self._messages:
            await self.next_arrival()
