"""An email's HTML part shown inline on the case page, at its own height, without a frame
or a script: the body is sanitized (an allowlist of tags and attributes; no script, no
form, no remote image, links only to http, https and mailto) and placed in a declarative
shadow root, so the console's styles do not touch it and its styles do not leak out.

The templates style with `style` attributes (as email clients require); the page's
Content-Security-Policy allows exactly those attribute values, by hash
('unsafe-hashes' + 'sha256-…'), and no other inline style."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser

_TAGS = frozenset({
    "a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "hr", "i",
    "img", "li", "ol", "p", "pre", "small", "span", "strong", "table", "tbody", "td", "th",
    "thead", "tr", "u", "ul"})
_VOID = frozenset({"br", "hr", "img"})
_DROPPED_WITH_CONTENT = frozenset({"script", "style", "head", "title", "template",
                                   "iframe", "object", "noscript", "svg", "math"})
_ATTRS = frozenset({"style", "href", "alt", "title", "lang", "dir", "colspan", "rowspan",
                    "align", "width", "src"})
_SCHEMES = ("http://", "https://", "mailto:")


@dataclass
class SafeEmail:
    html: str  # the sanitized body, to place in a shadow root
    styles: set[str] = field(default_factory=set)  # the style attribute values it uses


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.styles: set[str] = set()
        self.skipping = 0  # depth inside a dropped element

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> str:
        kept = []
        for name, value in attrs:
            value = value or ""
            if name not in _ATTRS:
                continue
            if name == "href" and not value.strip().lower().startswith(_SCHEMES):
                continue
            if name == "src" and (tag != "img" or not value.startswith("data:image/")):
                continue
            if name == "style":
                self.styles.add(value)
            kept.append(f' {name}="{escape(value, quote=True)}"')
        if tag == "a":
            kept.append(' rel="noopener noreferrer" target="_blank"')
        return "".join(kept)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED_WITH_CONTENT:
            self.skipping += tag not in _VOID
            return
        if self.skipping:
            return
        if tag == "body":  # the body's own style (its background) on a wrapper
            self.out.append(f"<div{self._attrs('div', attrs)}>")
        elif tag in _TAGS:
            self.out.append(f"<{tag}{self._attrs(tag, attrs)}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_WITH_CONTENT:
            self.skipping = max(0, self.skipping - 1)
            return
        if self.skipping:
            return
        if tag == "body":
            self.out.append("</div>")
        elif tag in _TAGS and tag not in _VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(escape(data, quote=False))


def safe_email(html: str) -> SafeEmail:
    """The email's body, sanitized, and the style values it uses."""
    parser = _Sanitizer()
    parser.feed(html)
    parser.close()
    return SafeEmail("".join(parser.out), parser.styles)


def style_hashes(styles: set[str]) -> str:
    """The CSP source list that allows exactly these style attribute values."""
    if not styles:
        return ""
    digests = sorted(base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
                     for s in styles)
    return "'unsafe-hashes' " + " ".join(f"'sha256-{d}'" for d in digests)
