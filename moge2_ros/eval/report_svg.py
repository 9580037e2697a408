"""Dependency-free SVG charts for the HTML reports: line charts (series over time / range) and bar charts
(histograms, binned errors).  Pure Python; NaN / None values are gaps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

__all__ = ["Series", "LineChart", "BarChart", "nice_ticks", "render_chart", "PALETTE"]

#: Colour-blind-friendly series colours (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

_W, _H = 640, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 28, 46, 46


@dataclass
class Series:
    """One line: ``x`` and ``y`` of equal length; non-finite ``y`` breaks the line."""

    name: str
    x: Sequence[float]
    y: Sequence[float | None]
    color: str | None = None
    dashed: bool = False
    markers: bool = False


@dataclass
class LineChart:
    """Line chart of one or more :class:`Series` sharing the axes."""

    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    y_zero: bool = False  # include 0 in the y range


@dataclass
class BarChart:
    """Bars over consecutive intervals ``edges[i]..edges[i+1]`` (``len(edges) == len(values) + 1``); optional
    per-bar annotations (e.g. pixel counts) shown as tooltips."""

    title: str
    x_label: str
    y_label: str
    edges: Sequence[float]
    values: Sequence[float | None]
    annotations: Sequence[str] | None = None
    color: str = PALETTE[0]


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[lo, hi]`` (steps 1, 2, 2.5 or 5 times a power of ten)."""
    if not (_finite(lo) and _finite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


class _Frame:
    """Plot area mapping data coordinates to SVG pixels, with axes, ticks and labels."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.xt = nice_ticks(*x_range)
        self.yt = nice_ticks(*y_range)
        self.x0, self.x1 = (self.xt[0], self.xt[-1]) if self.xt else (0.0, 1.0)
        self.y0, self.y1 = (self.yt[0], self.yt[-1]) if self.yt else (0.0, 1.0)

    def px(self, x: float) -> float:
        return _LEFT + (x - self.x0) / ((self.x1 - self.x0) or 1.0) * (_W - _LEFT - _RIGHT)

    def py(self, y: float) -> float:
        return _H - _BOTTOM - (y - self.y0) / ((self.y1 - self.y0) or 1.0) * (_H - _TOP - _BOTTOM)

    def axes(self, title: str, x_label: str, y_label: str) -> list[str]:
        out = [f'<text x="{_W / 2}" y="18" text-anchor="middle" class="ct">{escape(title)}</text>']
        for t in self.yt:
            y = self.py(t)
            out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>')
        for t in self.xt:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" class="axis"/>')
            out.append(f'<text x="{x:.1f}" y="{_H - _BOTTOM + 17}" text-anchor="middle" class="tick">{_fmt(t)}</text>')
        out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" class="axis"/>')
        out.append(f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_H - _BOTTOM}" class="axis"/>')
        out.append(f'<text x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H - 8}" text-anchor="middle" class="lab">'
                   f"{escape(x_label)}</text>")
        cy = (_TOP + _H - _BOTTOM) / 2
        out.append(f'<text x="14" y="{cy}" text-anchor="middle" class="lab" transform="rotate(-90 14 {cy})">'
                   f"{escape(y_label)}</text>")
        return out


def _svg(body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="100%" '
            f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>")


def _empty(title: str) -> str:
    return _svg([f'<text x="{_W / 2}" y="18" text-anchor="middle" class="ct">{escape(title)}</text>',
                 f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" class="lab">no data</text>'], title)


def _line_chart(chart: LineChart) -> str:
    xs = [float(x) for s in chart.series for x, y in zip(s.x, s.y) if _finite(y) and _finite(x)]
    ys = [float(y) for s in chart.series for x, y in zip(s.x, s.y) if _finite(y) and _finite(x)]
    if not ys:
        return _empty(chart.title)
    y_lo, y_hi = min(ys), max(ys)
    if chart.y_zero:
        y_lo, y_hi = min(y_lo, 0.0), max(y_hi, 0.0)
    if y_hi == y_lo:
        pad = abs(y_hi) * 0.05 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad
    frame = _Frame((min(xs), max(xs)), (y_lo, y_hi))
    body = frame.axes(chart.title, chart.x_label, chart.y_label)
    for k, s in enumerate(chart.series):
        color = s.color or PALETTE[k % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for x, y in zip(s.x, s.y):
            if _finite(y) and _finite(x):
                segments[-1].append(f"{frame.px(float(x)):.1f},{frame.py(float(y)):.1f}")
            elif segments[-1]:
                segments.append([])
        dash = ' stroke-dasharray="5,4"' if s.dashed else ""
        for seg in segments:
            if len(seg) > 1:
                body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} '
                            f'points="{" ".join(seg)}"/>')
            if s.markers or len(seg) == 1:
                for p in seg:
                    cx, cy = p.split(",")
                    body.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
        lx = _LEFT + 10 + 190 * k
        body.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{_TOP - 12}" y2="{_TOP - 12}" stroke="{color}" '
                    f'stroke-width="2.5"{dash}/>')
        body.append(f'<text x="{lx + 22}" y="{_TOP - 8}" class="leg">{escape(s.name)}</text>')
    return _svg(body, chart.title)


def _bar_chart(chart: BarChart) -> str:
    edges = [float(e) for e in chart.edges]
    vals = list(chart.values)
    if len(edges) != len(vals) + 1:
        raise ValueError(f"bar chart '{chart.title}': {len(edges)} edges for {len(vals)} values")
    ys = [float(v) for v in vals if _finite(v)]
    if not ys:
        return _empty(chart.title)
    frame = _Frame((edges[0], edges[-1]), (min(0.0, min(ys)), max(0.0, max(ys)) or 1.0))
    body = frame.axes(chart.title, chart.x_label, chart.y_label)
    base = frame.py(0.0)
    for i, v in enumerate(vals):
        if not _finite(v):
            continue
        x0, x1 = frame.px(edges[i]), frame.px(edges[i + 1])
        y = frame.py(float(v))
        tip = f"{_fmt(edges[i])}–{_fmt(edges[i + 1])}: {_fmt(float(v))}"
        if chart.annotations is not None:
            tip += f" ({chart.annotations[i]})"
        body.append(f'<rect x="{x0 + 0.5:.1f}" y="{min(y, base):.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
                    f'height="{abs(base - y):.1f}" fill="{chart.color}"><title>{escape(tip)}</title></rect>')
    return _svg(body, chart.title)


def render_chart(chart: LineChart | BarChart) -> str:
    """The chart as an inline ``<svg>`` element (styled by the report's CSS classes)."""
    if isinstance(chart, LineChart):
        return _line_chart(chart)
    if isinstance(chart, BarChart):
        return _bar_chart(chart)
    raise TypeError(f"render_chart: expected LineChart or BarChart, found {type(chart).__name__}")
