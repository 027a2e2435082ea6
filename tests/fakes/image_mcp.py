"""A small outside MCP server whose tools return what is not text: ``screenshot`` (an image, as a
browser server's would), ``page`` (an embedded image resource and an embedded text resource) and
``measure`` (structured content only). Run as a stdio server: ``python image_mcp.py``."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)

RED_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg=="
"""A 2x2 red PNG, base64."""


def build() -> MCPServer:
    server = MCPServer("shots", log_level="WARNING")

    @server.tool()
    def screenshot() -> CallToolResult:
        """A screenshot of the page."""
        return CallToolResult(
            content=[TextContent(text="the page as it looks:"), ImageContent(data=RED_PNG, mime_type="image/png")]
        )

    @server.tool()
    def page() -> CallToolResult:
        """The page's picture and its text, as embedded resources."""
        picture = BlobResourceContents(uri="page://picture", mime_type="image/png", blob=RED_PNG)
        text = TextResourceContents(uri="page://text", mime_type="text/plain", text="Hello from the page")
        return CallToolResult(content=[EmbeddedResource(resource=picture), EmbeddedResource(resource=text)])

    @server.tool()
    def measure() -> CallToolResult:
        """The page's size, as structured content only."""
        return CallToolResult(content=[], structured_content={"width": 2, "height": 2})

    return server


if __name__ == "__main__":
    build().run("stdio")
