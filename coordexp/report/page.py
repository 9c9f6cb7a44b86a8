"""One self-contained HTML page: a title, sections of text, tables, images and flags.

Reports (the run report, the replay diagnosis, the rollout bench) are read in a browser, copied
around and attached to issues, so a page must not depend on files next to it: images are embedded as
base64 PNG by default (``embed=False`` links them relative to the page instead). Every string is
HTML-escaped here, so a desc with ``<`` or a CJK slot token shows as written.

Usage::

    from coordexp.report.page import Level, Page

    page = Page("Run report: demo", subtitle="output/demo")
    curves = page.section("Curves", intro="One plot per metric family.")
    curves.image(Path("plots/loss.png"), caption="loss/* by term")     # a PNG file, PNG bytes or a PIL image
    curves.table(["key", "last"], [["loss/ce", 0.41], ["loss/coord", 1.2]])
    curves.flag(Level.BAD, "rollout/gen_new_tokens_p90 reaches max_new_tokens (64) at step 40")
    curves.text("Free text, one paragraph.")
    page.write(Path("report.html"))                                   # atomic write; returns the path

Flags are repeated in a summary at the top of the page, so a reader sees every problem first.
"""

from __future__ import annotations

import base64
import enum
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
from PIL import Image

FLOAT_DIGITS = 4


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    BAD = "bad"


_LEVEL_STYLE = {Level.OK: "#e6f4e6", Level.WARN: "#fff4d6", Level.BAD: "#fde2e2"}
_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 0.9em; }
th { background: #f0f0f0; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #333; }
.flag { padding: 4px 8px; margin: 2px 0; border-radius: 3px; }
"""


def cell(value: object) -> str:
    """A table cell's text: floats with FLOAT_DIGITS significant digits, the rest as str."""
    if isinstance(value, float):
        return f"{value:.{FLOAT_DIGITS}g}"
    return "" if value is None else str(value)


@attrs.frozen
class Flag:
    level: Level
    text: str
    section: str = ""


def _png_bytes(source: Path | bytes | Image.Image) -> bytes:
    if isinstance(source, Image.Image):
        buf = io.BytesIO()
        source.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


@attrs.define
class Section:
    title: str
    intro: str = ""
    _page: Page | None = attrs.field(default=None, repr=False)
    _parts: list[str] = attrs.field(factory=list)

    def text(self, paragraph: str) -> Section:
        self._parts.append(f"<p>{html.escape(paragraph)}</p>")
        return self

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]], *, caption: str = "") -> Section:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")
        return self

    def image(self, source: Path | bytes | Image.Image, *, caption: str = "", embed: bool = True,
              relative_to: Path | None = None) -> Section:
        """Embed a PNG (``embed``), or link ``source`` (a Path) relative to ``relative_to`` (the page's folder)."""
        alt = html.escape(caption or "figure")
        if embed:
            data = base64.b64encode(_png_bytes(source)).decode("ascii")
            src = f"data:image/png;base64,{data}"
        else:
            if not isinstance(source, Path):
                raise TypeError("a linked image needs a Path; embed bytes or PIL images")
            src = html.escape(os.path.relpath(source, relative_to) if relative_to else str(source))
        self._parts.append(f'<figure><img src="{src}" alt="{alt}"><figcaption>{html.escape(caption)}'
                           "</figcaption></figure>")
        return self

    def flag(self, level: Level, text: str) -> Section:
        flag = Flag(Level(level), text, self.title)
        if self._page is not None:
            self._page.flags.append(flag)
        self._parts.append(_flag_html(flag))
        return self

    def render(self) -> str:
        intro = f"<p>{html.escape(self.intro)}</p>" if self.intro else ""
        return f"<section><h2>{html.escape(self.title)}</h2>{intro}{''.join(self._parts)}</section>"


def _flag_html(flag: Flag) -> str:
    return (f'<div class="flag {flag.level.value}" style="background:{_LEVEL_STYLE[flag.level]}">'
            f"<b>{flag.level.value.upper()}</b> {html.escape(flag.text)}</div>")


@attrs.define
class Page:
    title: str
    subtitle: str = ""
    sections: list[Section] = attrs.field(factory=list)
    flags: list[Flag] = attrs.field(factory=list)

    def section(self, title: str, *, intro: str = "") -> Section:
        sec = Section(title, intro, page=self)
        self.sections.append(sec)
        return sec

    def render(self) -> str:
        summary = ""
        if self.flags:
            items = "".join(_flag_html(attrs.evolve(f, text=f"[{f.section}] {f.text}")) for f in self.flags)
            summary = f"<section><h2>Flags</h2>{items}</section>"
        sub = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        body = "".join(s.render() for s in self.sections)
        return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
                f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>{sub}{summary}{body}"
                "</body></html>\n")

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        os.replace(tmp, path)
        return path
