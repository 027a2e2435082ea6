"""Suite-wide fixtures: no test reaches a real model provider or the user's files, and the
scripted model server (``tests/fakes/scripted_llm.py``) for tests that run the real litellm path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.fakes.scripted_llm import ScriptedLLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytest_plugins = ["tests.api_helpers"]

# Set before any test module imports litellm, which otherwise fetches its cost map at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# every command of the suite starts its own model workers: a model host would outlive the test
# that started it (tests/test_model_host.py turns it on where it is the subject)
os.environ["DISPATCH_MODEL_HOST"] = "off"

NOWHERE = "http://127.0.0.1:9/v1"  # the discard port: nothing listens, every call fails to connect
FAKE_KEYS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "XAI_API_KEY",
    "TOGETHERAI_API_KEY",
    "COHERE_API_KEY",
)
BASE_URLS = ("OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE")
REMOVED = (
    "AZURE_API_KEY",
    "AZURE_API_BASE",
    "AZURE_OPENAI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",  # a developer's collector: only tests/test_otel.py sends traces, to its own
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


@pytest.fixture(autouse=True)
def _no_real_providers_or_user_files(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake keys and closed-port base URLs for every provider; HOME and DISPATCH_HOME in temp dirs."""
    for name in FAKE_KEYS:
        monkeypatch.setenv(name, f"test-{name.lower()}-not-a-real-key")
    for name in BASE_URLS:
        monkeypatch.setenv(name, NOWHERE)
    for name in REMOVED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("NO_PROXY", ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")])))
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("DISPATCH_HOME", str(tmp_path_factory.mktemp("dispatch-home")))


@pytest.fixture
def scripted_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedLLM]:
    """A started scripted model server that litellm's ``openai/...`` models reach. The test fails at
    teardown when a request went unanswered (no script, ambiguous, exhausted) or a step went unused."""
    llm = ScriptedLLM().start()
    monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
    monkeypatch.setenv("OPENAI_API_BASE", llm.base_url)
    try:
        yield llm
    finally:
        llm.stop()
    _fail_on_problems([llm])


def _fail_on_problems(servers: list[ScriptedLLM]) -> None:
    problems: list[str] = []
    for llm in servers:
        try:
            llm.assert_complete()
        except AssertionError as error:
            problems.append(str(error))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def scripted_llms() -> Iterator[Callable[[], ScriptedLLM]]:
    """A factory of started scripted model servers, one per provider a test configures (each with
    its own ``base_url``); the same teardown checks as ``scripted_llm``, for every server."""
    started: list[ScriptedLLM] = []

    def start() -> ScriptedLLM:
        started.append(ScriptedLLM().start())
        return started[-1]

    try:
        yield start
    finally:
        for llm in started:
            llm.stop()
    _fail_on_problems(started)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def two(scripted_llms: Callable[[], ScriptedLLM]) -> tuple[ScriptedLLM, ScriptedLLM]:
    """Two scripted model servers, standing for two providers."""
    return scripted_llms(), scripted_llms()


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium for the web UI's tests (skipped, naming the package, where it is missing)."""
    from tests.web_ui_helpers import chromium  # Playwright loads only for the tests that use it

    with chromium() as launched:
        yield launched
