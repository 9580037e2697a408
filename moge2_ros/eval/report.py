"""Self-contained HTML evaluation reports: one file, no server, no network, no JavaScript needed.

Everything is inline: CSS, SVG charts (:mod:`moge2_ros.eval.report_svg`), images as base64 PNG, and the report's
numbers as machine-readable JSON in ``<script type="application/json" id="report-data">`` (so a test or a script
can read back exactly what the tables show).  Open the file in any browser.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from moge2_ros.errors import InputError
from moge2_ros.eval.report_svg import BarChart, LineChart, render_chart
from moge2_ros.io.writers import jsonable

__all__ = ["write_html_report", "read_report_data", "png_data_uri", "ImageRow"]

#: One row of images shown side by side: ``(caption, [(label, (H, W, 3) uint8 RGB), ...])``.
ImageRow = tuple[str, Sequence[tuple[str, np.ndarray]]]
Images = Union[Sequence[ImageRow], Mapping[str, np.ndarray]]

#: Per-frame tables longer than this show the first rows only (the embedded JSON keeps all of them).
MAX_TABLE_ROWS = 2000

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;color:#222;
padding:0 16px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}.sub{color:#666;font-size:13px;margin-bottom:12px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4;position:sticky;top:0}td.k,th.k{text-align:left}
.kv{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.scroll{max-height:420px;max-width:100%;overflow:auto;border:1px solid #eee;display:inline-block}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:12px}
.chart{border:1px solid #eee;padding:4px;min-width:0}.chart svg{display:block;width:100%;height:auto}
svg .grid{stroke:#eee}svg .axis{stroke:#888}
svg .tick{font-size:11px;fill:#555}svg .lab{font-size:12px;fill:#333}svg .ct{font-size:13px;font-weight:600;fill:#222}
svg .leg{font-size:11px;fill:#333}.imgrow{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:14px}
figure{margin:0}figure img{display:block;max-width:300px;height:auto;image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:12px;color:#444;max-width:300px}.notes{font-size:13px;color:#333}.notes li{margin:2px 0}
"""


def png_data_uri(rgb: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` uint8 grey) image."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise InputError(f"report image: expected (H, W, 3) or (H, W) uint8, found {rgb.dtype} {rgb.shape}")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "–"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return escape(str(value))


def _kv_table(items: Mapping[str, Any]) -> str:
    rows = "".join(f'<tr><td class="k">{escape(str(k))}</td><td>{_fmt(v)}</td></tr>' for k, v in items.items())
    return f'<table><tr><th class="k">metric</th><th>value</th></tr>{rows}</table>'


def _summary_html(summary: Mapping[str, Any]) -> str:
    flat = {k: v for k, v in summary.items() if not isinstance(v, Mapping)}
    nested = {k: v for k, v in summary.items() if isinstance(v, Mapping)}
    parts = []
    if flat:
        parts.append(f"<div>{_kv_table(flat)}</div>")
    for name, group in nested.items():
        parts.append(f"<div><h3>{escape(str(name))}</h3>{_kv_table(group)}</div>")
    return f'<div class="kv">{"".join(parts)}</div>'


def _frames_html(per_frame: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> str:
    if not per_frame:
        return "<p>No frames.</p>"
    if columns is None:
        columns = []
        for record in per_frame:
            columns.extend(k for k in record if k not in columns)
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in per_frame[:MAX_TABLE_ROWS]
    )
    note = "" if len(per_frame) <= MAX_TABLE_ROWS else (
        f"<p class='sub'>First {MAX_TABLE_ROWS} of {len(per_frame)} frames shown; all are in the embedded JSON.</p>")
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>{note}'


def _images_html(images: Images) -> str:
    rows: list[ImageRow]
    if isinstance(images, Mapping):
        rows = [(str(k), [(str(k), v)]) for k, v in images.items()]
    else:
        rows = list(images)
    out = []
    for caption, panels in rows:
        figs = "".join(
            f'<figure><img alt="{escape(label)}" src="{png_data_uri(img)}"><figcaption>{escape(label)}'
            f"</figcaption></figure>"
            for label, img in panels
        )
        out.append(f"<h3>{escape(caption)}</h3><div class='imgrow'>{figs}</div>")
    return "".join(out)


def _script_json(data: Any) -> str:
    text = json.dumps(jsonable(data), allow_nan=False, separators=(",", ":"))
    # Inside <script>, "</" would end the element early.
    return text.replace("</", "<\\/")


def write_html_report(
    path: str | Path,
    title: str,
    summary: Mapping[str, Any],
    per_frame: Sequence[Mapping[str, Any]],
    images: Images,
    *,
    charts: Sequence[LineChart | BarChart] = (),
    notes: Sequence[str] = (),
    subtitle: str = "",
    columns: Sequence[str] | None = None,
) -> Path:
    """Write a self-contained HTML report (written to a temporary sibling, then renamed: never half-written).

    Args:
        path: output ``.html`` file (parent folders are created).
        title: page title.
        summary: summary values ``{name: number | str}``; nested mappings become separate tables.
        per_frame: one record per frame ``{column: value}`` (a table; all records also go into the embedded JSON).
        images: rows of images shown side by side (:data:`ImageRow`), or ``{caption: image}``.
        charts: SVG charts (:class:`LineChart`, :class:`BarChart`) shown between the summary and the frames.
        notes: short paragraphs (plain text) explaining what is measured.
        subtitle: a line under the title (e.g. input files).
        columns: per-frame table columns (default: every key, in first-seen order).

    Returns:
        The written path.
    """
    path = Path(path)
    sections = [f"<h1>{escape(title)}</h1>"]
    if subtitle:
        sections.append(f'<div class="sub">{escape(subtitle)}</div>')
    sections.append("<h2>Summary</h2>" + _summary_html(summary))
    if charts:
        svgs = "".join(f'<div class="chart">{render_chart(c)}</div>' for c in charts)
        sections.append(f'<h2>Plots</h2><div class="charts">{svgs}</div>')
    image_html = _images_html(images)
    if image_html:
        sections.append("<h2>Sample frames</h2>" + image_html)
    sections.append(f"<h2>Per-frame metrics ({len(per_frame)} frames)</h2>" + _frames_html(per_frame, columns))
    if notes:
        items = "".join(f"<li>{escape(n)}</li>" for n in notes)
        sections.append(f'<h2>What is measured</h2><ul class="notes">{items}</ul>')
    data = {"title": title, "summary": summary, "per_frame": list(per_frame)}
    html = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(sections)}"
        f'<script type="application/json" id="report-data">{_script_json(data)}</script></body></html>\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_report_data(path: str | Path) -> dict[str, Any]:
    """The JSON embedded by :func:`write_html_report` (``title``, ``summary``, ``per_frame``; NaN as None)."""
    text = Path(path).read_text(encoding="utf-8")
    marker = '<script type="application/json" id="report-data">'
    start = text.find(marker)
    end = text.find("</script>", start)
    if start < 0 or end < 0:
        raise InputError(f"{path}: no embedded report data (not written by write_html_report?)")
    return json.loads(text[start + len(marker): end].replace("<\\/", "</"))
