"""Traces: whether the hub sends OpenTelemetry traces, and where; off and free unless asked for.

The standard variables decide it: traces are on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the
whole URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL, ``/v1/traces`` added) is set, unless
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. On, and with the ``otel`` extra
installed, :func:`traced` has :mod:`dispatch.hub.service.otel_spans` build spans from the hub's
events and send them over OTLP/HTTP; off, neither it nor OpenTelemetry is imported and nothing
subscribes to the events. Set but without the extra, the hub runs untraced and its log says why
(so does ``dispatch doctor``, from :func:`tracing_status`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import Literal

from dispatch.hub.events import EventBus

TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
INSTALL_HINT = "pip install 'dispatch-harness[otel]'"

_log = logging.getLogger(__name__)


def tracing_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """Where the hub sends its spans (the OTLP/HTTP traces URL), or None when tracing is off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if whole := env.get(TRACES_ENDPOINT, "").strip():
        return whole
    if base := env.get(ENDPOINT, "").strip():
        return base.rstrip("/") + "/v1/traces"
    return None


def otel_installed() -> bool:
    """Whether the ``otel`` extra's packages are there (looked up, not imported)."""
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:  # not even the opentelemetry namespace
        return False


def tracing_status(env: Mapping[str, str] | None = None) -> tuple[Literal["ok", "off", "missing"], str]:
    """Whether traces are sent and where, as ``dispatch doctor`` says it."""
    endpoint = tracing_endpoint(env)
    if endpoint is None:
        return "off", f"no traces ({ENDPOINT} is not set)"
    if not otel_installed():
        return "missing", f"{endpoint} is asked for, but the otel extra is not installed: {INSTALL_HINT}"
    return "ok", f"spans go to {endpoint} (OTLP/HTTP)"


@asynccontextmanager
async def traced(bus: EventBus, env: Mapping[str, str] | None = None) -> AsyncGenerator[None]:
    """While open, the events of ``bus`` become spans sent to :func:`tracing_endpoint`; on leaving,
    what is still open is ended and everything is sent. Does nothing when tracing is off."""
    endpoint = tracing_endpoint(env)
    if endpoint is None:
        yield
        return
    if not otel_installed():
        _log.warning("%s is set but the otel extra is not installed (%s): no traces are sent", ENDPOINT, INSTALL_HINT)
        yield
        return
    from dispatch.hub.service.otel_spans import exporting  # only now: OpenTelemetry is imported when asked for

    async with exporting(bus):
        yield
