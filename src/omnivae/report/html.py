"""A self-contained HTML report: sections of text, metric tables and embedded PNG figures."""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from omnivae.atomic import write_bytes
from omnivae.errors import InputError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DATA_PREFIX = "data:image/png;base64,"
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } .stamp { color: #777; font-size: 0.9em; }
nav { background: #f6f6f6; padding: 0.5em 1em; border-radius: 6px; }
section { margin-top: 2em; border-top: 1px solid #ddd; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #777; font-size: 0.8em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
details { margin: 0.8em 0; } summary { cursor: pointer; color: #1f5fa8; }
pre { background: #f6f6f6; padding: 0.6em 1em; border-radius: 6px; font-size: 0.85em; overflow-x: auto; }
"""


@dataclass
class Section:
    """One report section: a heading, plain-text paragraphs, PNG figures, an optional metrics table and
    an optional block of preformatted text (`details`, e.g. a config file) shown folded under `details_title`."""

    title: str
    text: str = ""
    images: list[Path] = field(default_factory=list)
    table: dict[str, Any] | list[dict[str, Any]] | None = None
    details: str = ""
    details_title: str = "details"
    columns: tuple[str, str] = ("metric", "value")  # the header of a dict table


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name + "."))
        else:
            out[name] = value
    return out


def _scalar(value: Any) -> Any:
    """Unwrap 0-d numpy arrays / torch tensors into Python numbers."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def _cell(value: Any) -> str:
    value = _scalar(value)
    if value is None:
        return "<td></td>"
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(table: Any, where: str, columns: tuple[str, str] = ("metric", "value")) -> str:
    if isinstance(table, Mapping):
        flat = flatten_metrics(table)
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td>{_cell(v)}</tr>" for k, v in flat.items())
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        return f"<table><tr>{head}</tr>{rows}</table>"
    if isinstance(table, (list, tuple)) and all(isinstance(r, Mapping) for r in table):
        flat_rows = [flatten_metrics(r) for r in table]
        columns = list(dict.fromkeys(k for r in flat_rows for k in r))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in flat_rows)
        return f"<table><tr>{head}</tr>{body}</table>"
    raise InputError(f"{where}: table must be a dict or a list of dicts, got {type(table).__name__}")


def _paragraphs(text: str) -> str:
    parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join("<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in parts)


def _figure(image: str | os.PathLike, section_title: str) -> str:
    path = Path(image)
    if not path.is_file():
        raise InputError(f"section {section_title!r}: image file not found: {path}")
    data = path.read_bytes()
    if not data.startswith(_PNG_MAGIC):
        raise InputError(f"section {section_title!r}: {path} is not a PNG file")
    name = html.escape(path.name, quote=True)
    alt = html.escape(f"{section_title}: {path.stem.replace('_', ' ')}", quote=True)
    src = _DATA_PREFIX + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{src}" alt="{alt}" data-source="{name}"><figcaption>{name}</figcaption></figure>'


def _anchor(index: int, title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]
    return f"sec-{index}-{slug}" if slug else f"sec-{index}"


def write_report(path: str | os.PathLike, title: str, sections: list[Section]) -> Path:
    """Write one self-contained HTML page (images inlined as base64) and return its path."""
    if not isinstance(title, str):
        raise InputError(f"report title must be a string, got {type(title).__name__}")
    toc, body = [], []
    for i, section in enumerate(sections, start=1):
        if not isinstance(section, Section):
            raise InputError(f"sections[{i - 1}] must be a Section, got {type(section).__name__}")
        if not isinstance(section.title, str) or not section.title.strip():
            raise InputError(f"sections[{i - 1}] needs a non-empty string title, got {section.title!r}")
        anchor, heading = _anchor(i, section.title), html.escape(section.title)
        toc.append(f'<li><a href="#{anchor}">{heading}</a></li>')
        parts = [f'<section id="{anchor}"><h2>{heading}</h2>', _paragraphs(section.text or "")]
        if section.table is not None:
            parts.append(_table(section.table, f"section {section.title!r}", section.columns))
        parts.extend(_figure(p, section.title) for p in section.images)
        if section.details:
            parts.append(f"<details><summary>{html.escape(section.details_title)}</summary>"
                         f"<pre>{html.escape(section.details)}</pre></details>")
        body.append("".join(parts) + "</section>")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="stamp">Generated {stamp}</p>'
        f"<nav><strong>Contents</strong><ul>{''.join(toc)}</ul></nav>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    return write_bytes(path, page.encode("utf-8"))


class _ImageCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, bytes]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        src = found.get("src") or ""
        if tag == "img" and src.startswith(_DATA_PREFIX):
            data = base64.b64decode(src[len(_DATA_PREFIX):], validate=True)
            self.images.append((found.get("alt") or "", data))


def read_report_images(html_path: str | os.PathLike) -> list[tuple[str, bytes]]:
    """Return (alt text, PNG bytes) for every image embedded in a report page."""
    parser = _ImageCollector()
    parser.feed(Path(html_path).read_text(encoding="utf-8"))
    parser.close()
    return parser.images
