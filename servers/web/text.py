"""A fetched page as text the model can read: HTML to Markdown, other text as it is.

HTML goes through BeautifulSoup (the standard library's parser) and markdownify: scripts, styles,
forms, navigation and other chrome are dropped, the page's ``<main>`` (or ``<article>``, or
``<body>``) is kept, and links are made absolute against the page's final URL. Binary content is
not shown, only described.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin

from bs4 import BeautifulSoup, Tag
from markdownify import ATX, MarkdownConverter

__all__ = ["PageText", "is_text", "page_text"]

_DROP = ("script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed", "form", "head")
_CHROME = ("nav", "header", "footer", "aside")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/x-yaml")
_BLANK_LINES = re.compile(r"\n[ \t]*(\n[ \t]*){2,}")


@dataclass(frozen=True)
class PageText:
    title: str
    text: str


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_html(content_type: str) -> bool:
    return _media_type(content_type) in _HTML_TYPES


def is_text(content_type: str) -> bool:
    """Whether a body of this type is text worth showing (HTML, text/*, JSON, XML, ...)."""
    media = _media_type(content_type)
    return (
        not media
        or media.startswith("text/")
        or media in _HTML_TYPES
        or media in _TEXT_TYPES
        or media.endswith(("+json", "+xml"))
    )


def _main_part(soup: BeautifulSoup) -> Tag | BeautifulSoup:
    for name in ("main", "article"):
        found = soup.find(name)
        if isinstance(found, Tag):
            return found
    for chrome in soup.find_all(_CHROME):
        chrome.decompose()
    body = soup.find("body")
    return body if isinstance(body, Tag) else soup


def html_to_markdown(html: str, base_url: str) -> PageText:
    """The readable part of an HTML page as Markdown, with its title."""
    soup = BeautifulSoup(html, "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if isinstance(title_tag, Tag) else ""
    for tag in soup.find_all(_DROP):
        tag.decompose()
    for tag in soup.select("[hidden]"):
        tag.decompose()
    for link in soup.find_all("a", href=True):
        href = str(link.get("href", ""))
        if href.lower().startswith("javascript:"):
            del link["href"]
        else:
            link["href"] = urljoin(base_url, href)
    for image in soup.find_all("img", src=True):
        image["src"] = urljoin(base_url, str(image.get("src", "")))
    text = MarkdownConverter(heading_style=ATX, bullets="-", escape_underscores=False).convert_soup(_main_part(soup))
    return PageText(title, _BLANK_LINES.sub("\n\n", text).strip())


def page_text(body: bytes, encoding: str, content_type: str, url: str) -> PageText:
    """The body as readable text; HTML becomes Markdown. Bytes that do not decode are replaced."""
    try:
        decoded = body.decode(encoding, errors="replace")
    except LookupError:  # an unknown charset named by the server
        decoded = body.decode("utf-8", errors="replace")
    if is_html(content_type) or (not content_type and "<html" in decoded[:1000].lower()):
        return html_to_markdown(decoded, url)
    return PageText("", decoded)
