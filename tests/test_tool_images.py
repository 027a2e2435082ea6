"""Images and other content from tools: an outside stdio MCP server (``tests/fakes/image_mcp.py``)
returns an image, embedded resources and structured content; the model's HTTP request (the
scripted server, behind real litellm) carries the image as an image part for a vision model and a
short description for one without vision; the hub's transcript view keeps the image."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp_types import CallToolResult, ImageContent, TextContent

from dispatch.hub.agents import compaction
from dispatch.hub.agents.compaction import Compaction
from dispatch.hub.llm.context import estimate_tokens
from dispatch.hub.llm.images import IMAGE_TOKENS, MAX_IMAGE_BYTES, ToolImage, images_message
from dispatch.hub.mounts.toolset import result_outcome
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call
from tests.fakes import image_mcp
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM

pytestmark = pytest.mark.anyio
IMAGE_URL = f"data:image/png;base64,{image_mcp.RED_PNG}"


def project_with_shots(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / ".dispatch" / "templates").mkdir(parents=True)
    server = {"command": sys.executable, "args": [str(Path(image_mcp.__file__).resolve())]}
    (root / ".dispatch" / "config.yaml").write_text(yaml.safe_dump({"mcp_servers": {"shots": server}}))
    (root / ".dispatch" / "templates" / "looker.yaml").write_text("tools: {fs: true, shots: true}\n")
    return root


async def run_looker(tmp_path: Path, model: str, task: str) -> list[dict[str, Any]]:
    """Run a ``looker`` top agent to its report; its transcript as the API shows it once the hub
    is opened again (read back from the journal)."""
    root = project_with_shots(tmp_path)
    async with Hub.open(root, tmp_path / "data") as hub:
        started = await hub.start(task, template="looker", model=model)
        agent = hub.tree.agents[started.id]
        await agent.finished.wait()
        assert agent.report == "seen", agent.error
    async with Hub.open(root, tmp_path / "data") as hub:
        return (await hub.agent(started.id)).transcript


def after_the_tool_results(request: RecordedRequest) -> list[dict[str, Any]]:
    """The messages after the last assistant message of the request, as the HTTP body had them."""
    messages: list[dict[str, Any]] = request.body["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[last + 1 :]


async def test_an_image_reaches_a_vision_model_as_an_image_part(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[look]", [Reply(tool_calls=[call("screenshot"), call("page"), call("measure")]), Reply(text="seen")]
    )

    transcript = await run_looker(tmp_path, "openai/gpt-4o", "[look] what does the page show?")

    _, second = scripted_llm.requests_for("[look]")
    shot, page, measured, images = after_the_tool_results(second)
    assert shot["role"] == "tool" and "the page as it looks:" in shot["content"]
    assert "[image (image/png, 1 KB): in the message after the tool results]" in shot["content"]
    assert "[untrusted data from shots.screenshot" in shot["content"]  # an outside server's, marked
    assert "[resource page://text]\nHello from the page" in page["content"]
    assert page["content"].count("in the message after the tool results") == 1
    assert '{"width": 2, "height": 2}' in measured["content"]  # structured content, kept
    assert images["role"] == "user"
    assert [p["type"] for p in images["content"]] == ["text", "image_url", "text", "image_url"]
    assert images["content"][0]["text"].startswith("Image 1, returned by screenshot (tool call ")
    assert images["content"][1]["image_url"]["url"] == IMAGE_URL
    assert images["content"][3]["image_url"]["url"] == IMAGE_URL
    assert images in transcript, "the transcript view (read back from the journal) carries the image"


async def test_a_model_without_vision_reads_what_was_left_out(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[blind]", [Reply(tool_calls=[call("screenshot")]), Reply(text="seen")])

    transcript = await run_looker(tmp_path, "openai/scripted", "[blind] what does the page show?")

    _, second = scripted_llm.requests_for("[blind]")
    _, said = after_the_tool_results(second)
    assert said["role"] == "user" and isinstance(said["content"], str)
    assert "Image 1, returned by screenshot" in said["content"]
    assert "[an image (image/png, 1 KB) left out: model 'openai/scripted' does not accept images]" in said["content"]
    assert "base64" not in str(second.body)
    assert any(isinstance(m["content"], list) for m in transcript), "the transcript keeps the image all the same"


def test_an_image_over_the_cap_is_described_not_kept() -> None:
    huge = base64.b64encode(b"\x00" * (MAX_IMAGE_BYTES + 1)).decode()
    result = CallToolResult(content=[TextContent(text="big"), ImageContent(data=huge, mime_type="image/png")])

    outcome = result_outcome(result)

    assert outcome.images == ()
    assert outcome.text == "big\n[image (image/png, 4.0 MB) not shown: images are sent up to 4.0 MB]"


def test_an_image_costs_the_estimate_an_image_and_compaction_leaves_old_ones_out() -> None:
    data = base64.b64encode(b"\x01" * 3 * 1024 * 1024).decode()  # 3 MB: sent, but not 1M tokens' worth
    shown = images_message([("screenshot", "call-1", ToolImage("image/png", data))])
    assert shown is not None
    transcript = [
        {"role": "system", "content": "agent"},
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "call-1", "content": "[image (image/png, 3.0 MB): in the message after]"},
        shown,
        {"role": "assistant", "content": "next"},
    ]

    assert IMAGE_TOKENS <= estimate_tokens([shown]) < 2 * IMAGE_TOKENS
    sent = compaction.sent(transcript, Compaction(shortened=5))

    assert sent[4] == {
        "role": "user",
        "content": "Image 1, returned by screenshot (tool call call-1):\n[image]\n"
        "[the images are left out to fit the context window]",
    }
    assert compaction.sent(transcript, Compaction(shortened=4))[4] == shown  # a recent turn keeps its image
