"""What a failed provider call means for the key router: which kind of failure, and until when.

    quota        429 insufficient_quota: the key's money is gone; reset unknown (probed)
    rate_limit   429 rate limit: until the retry-after / reset header, else unknown (probed)
    auth         401/403: the key is refused until the config changes
    transient    5xx, 408, timeouts: retry on the same key with backoff, then move on
    unreachable  the endpoint was never reached: move on
    context      the request is longer than the model's context window: raise at once (the agent compacts)
    fatal        anything else (a bad request): raise at once

Reset headers read: ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date),
``x-ratelimit-reset-requests`` / ``-tokens`` (``1s``, ``6m0s``, ``250ms``), and Anthropic's
``anthropic-ratelimit-*-reset`` (RFC 3339 times).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from types import ModuleType
from typing import Any, cast

from dispatch.hub.llm.litellm_call import is_context_too_long, is_unknown_model, is_unreachable

TRANSIENT_STATUS = frozenset({408, 409, 500, 502, 503, 504, 520, 522, 524, 529})
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class FailureKind(StrEnum):
    quota = "quota"
    rate_limit = "rate_limit"
    auth = "auth"
    transient = "transient"
    unreachable = "unreachable"
    context = "context"
    fatal = "fatal"

    @property
    def exhausts_key(self) -> bool:
        """Whether the key is marked unavailable and the step moves to the next candidate."""
        return self in (FailureKind.quota, FailureKind.rate_limit, FailureKind.auth)


@dataclass(frozen=True)
class Failure:
    """A classified provider error."""

    kind: FailureKind
    reset_at: float | None
    """When the key may be used again (POSIX seconds); None: unknown."""
    detail: str


def _duration_s(text: str) -> float | None:
    """``6m0s``, ``1.5s``, ``250ms`` or a bare number of seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _moment(text: str) -> float | None:
    """An RFC 3339 or HTTP date as POSIX seconds."""
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _epoch(number: float) -> float | None:
    """A number too large to be a wait: an epoch time in seconds or milliseconds."""
    if number > 1e12:
        return number / 1000
    return number if number > 1e9 else None


def reset_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """When a rate limit ends, from the response headers; None when they do not say."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        seconds = _duration_s(lower["retry-after-ms"])
        if seconds is not None:
            return now + seconds / 1000
    if "retry-after" in lower:
        value = lower["retry-after"]
        seconds = _duration_s(value)
        at = now + seconds if seconds is not None else _moment(value)
        if at is not None:
            return at
    resets: list[tuple[float, bool]] = []
    for name, value in lower.items():
        if name.startswith("x-ratelimit-reset"):
            seconds = _duration_s(value)
            at = None if seconds is None else _epoch(seconds) or now + seconds
        elif name.startswith("anthropic-ratelimit-") and name.endswith("-reset"):
            at = _moment(value)
        else:
            continue
        if at is not None:
            remaining = lower.get(name.replace("reset", "remaining"), "")
            resets.append((at, remaining.strip() == "0"))
    spent = [at for at, zero in resets if zero]
    chosen = spent or [at for at, _ in resets]
    return max(chosen) if chosen else None


def headers_of(error: BaseException) -> Mapping[str, str]:
    headers: Any = getattr(error, "litellm_response_headers", None)
    if headers is None:
        response: Any = getattr(error, "response", None)
        headers = getattr(response, "headers", None)
    try:
        return {str(k): str(v) for k, v in cast(Mapping[Any, Any], headers or {}).items()}
    except (AttributeError, TypeError):
        return {}


def _is_quota(error: BaseException) -> bool:
    body: Any = getattr(error, "body", None)
    if isinstance(body, dict):
        fields = cast(dict[str, Any], body)
        if "insufficient_quota" in (str(fields.get("code")), str(fields.get("type"))):
            return True
    text = str(error).lower()
    return "insufficient_quota" in text or "exceeded your current quota" in text


def classify(litellm: ModuleType, error: BaseException, now: float) -> Failure:
    """Sort a litellm exception into a :class:`Failure`."""
    text = str(error).strip()
    detail = text.splitlines()[0] if text else type(error).__name__
    status: Any = getattr(error, "status_code", None)
    if is_unknown_model(litellm, error):
        return Failure(FailureKind.fatal, None, detail)
    if isinstance(error, litellm.Timeout):
        return Failure(FailureKind.transient, None, detail)
    if is_unreachable(litellm, error):
        return Failure(FailureKind.unreachable, None, detail)
    if isinstance(error, litellm.RateLimitError) or status == 429:
        if _is_quota(error):
            return Failure(FailureKind.quota, None, detail)
        return Failure(FailureKind.rate_limit, reset_from_headers(headers_of(error), now), detail)
    if isinstance(error, litellm.AuthenticationError | litellm.PermissionDeniedError) or status in (401, 403):
        return Failure(FailureKind.auth, None, detail)
    if is_context_too_long(litellm, error):
        return Failure(FailureKind.context, None, detail)
    if isinstance(error, litellm.BadRequestError):
        return Failure(FailureKind.fatal, None, detail)
    if status in TRANSIENT_STATUS or isinstance(
        error, litellm.ServiceUnavailableError | litellm.InternalServerError | litellm.APIConnectionError
    ):
        return Failure(FailureKind.transient, None, detail)
    return Failure(FailureKind.fatal, None, detail)
