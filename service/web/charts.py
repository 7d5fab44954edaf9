"""Server-side SVG charts: lines, steps and scatter points with axes, ticks, labels and a legend.

The output is a self-contained `<svg>` element (presentation attributes only, no inline CSS or
script, so it passes a strict Content-Security-Policy). Every piece of text is escaped.

Conventions for the data:
- a point is `(x, y)`; in a line or step series a point with `y=None` breaks the line;
- in a scatter series a point with `y=None` is drawn on the bottom edge of the plot (used to mark
  candidates that failed and have no score);
- per-point `titles` become hover tooltips and per-point `links` make the marker a link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from markupsafe import Markup, escape

PALETTE = ["#0b6bcb", "#e07b00", "#1a9b5b", "#c2378a", "#6b4fbb", "#8c6d1f", "#13a3b5", "#555555"]
FAIL_COLOR = "#c62828"
FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"


@dataclass
class Series:
    """One thing drawn on a chart."""

    name: str
    points: list[tuple[float, float | None]]
    style: Literal["line", "step", "scatter", "band"] = "line"  # band: filled between `lower` and the points
    color: str | None = None
    marker: Literal["circle", "cross"] = "circle"
    dashed: bool = False
    titles: list[str] | None = None
    links: list[str | None] | None = None
    lower: list[float] | None = None  # a band's lower edge, one value per point


@dataclass
class RefLine:
    """A horizontal reference line (e.g. the warm start at 1.0)."""

    y: float
    label: str


@dataclass
class Chart:
    series: list[Series]
    title: str = ""
    x_label: str = ""
    y_label: str = ""
    width: int = 720
    height: int = 340
    ref_lines: list[RefLine] = field(default_factory=list)
    x_integer: bool = False
    empty_text: str = "no data yet"


def nice_ticks(lo: float, hi: float, count: int = 6, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten.

    With `integer`, steps are whole numbers (for counts such as "candidates evaluated").
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = magnitude * 10
    for multiple in (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10):
        if multiple * magnitude >= raw and (not integer or multiple * magnitude >= 1):
            step = multiple * magnitude
            break
    start = math.floor(lo / step + 1e-9) * step
    end = math.ceil(hi / step - 1e-9) * step
    n = round((end - start) / step)
    return [round(start + i * step, 12) for i in range(n + 1)]


def format_tick(value: float, step: float) -> str:
    """A tick label with as many decimals as the step needs (2.5 -> one, 0.25 -> two)."""
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > 1e-9 * max(1.0, abs(step)):
        decimals += 1
    return f"{value:.{decimals}f}"


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def render(chart: Chart) -> Markup:
    """The chart as an `<svg>` element (Markup, safe to place in a template)."""
    w, h = chart.width, chart.height
    left, right, top, bottom = 64, 78 if chart.ref_lines else 16, 34 if chart.title else 12, 48
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(chart.series)]
    legend = [(s, c) for s, c in zip(chart.series, colors, strict=True) if s.name]
    legend_rows = _legend_rows(legend, w - left - right)
    top += 20 * len(legend_rows)
    plot_w, plot_h = w - left - right, h - top - bottom

    xs = [x for s in chart.series for x, _ in s.points]
    ys = [y for s in chart.series for _, y in s.points if y is not None and math.isfinite(y)]
    ys += [y for s in chart.series for y in s.lower or [] if math.isfinite(y)]
    ys += [r.y for r in chart.ref_lines]
    label = escape(chart.title or "chart")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
           f'role="img" aria-label="{label}" font-family="{FONT}" font-size="12">',
           f"<title>{label}</title>", f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>']
    if chart.title:
        out.append(f'<text x="{left}" y="20" font-size="14" font-weight="600" fill="#1d2733">'
                   f"{escape(chart.title)}</text>")
    _legend(out, legend_rows, left, (34 if chart.title else 12))
    if not xs:
        out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" stroke="#d0d7de"/>')
        out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" fill="#6a737d">'
                   f"{escape(chart.empty_text)}</text></svg>")
        return Markup("".join(out))

    x_ticks = nice_ticks(min(xs), max(xs), 10 if chart.x_integer else 6, integer=chart.x_integer)
    y_ticks = nice_ticks(min(ys) if ys else 0.0, max(ys) if ys else 1.0, 6)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h

    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fcfcfd" stroke="#d0d7de"/>')
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    for t in y_ticks:
        y = _fmt(py(t))
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y}" y2="{y}" stroke="#eaeef2"/>')
        out.append(f'<text x="{left - 6}" y="{y}" text-anchor="end" dominant-baseline="middle" fill="#57606a">'
                   f"{escape(format_tick(t, y_step))}</text>")
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    for t in x_ticks:
        x = _fmt(px(t))
        out.append(f'<line x1="{x}" x2="{x}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#8c959f"/>')
        out.append(f'<text x="{x}" y="{top + plot_h + 17}" text-anchor="middle" fill="#57606a">'
                   f"{escape(format_tick(t, x_step))}</text>")
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#8c959f"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#8c959f"/>')
    if chart.x_label:
        out.append(f'<text x="{left + plot_w / 2}" y="{h - 8}" text-anchor="middle" fill="#24292f">'
                   f"{escape(chart.x_label)}</text>")
    if chart.y_label:
        cy = top + plot_h / 2
        out.append(f'<text x="14" y="{cy}" text-anchor="middle" fill="#24292f" transform="rotate(-90 14 {cy})">'
                   f"{escape(chart.y_label)}</text>")
    for ref in chart.ref_lines:
        y = _fmt(py(ref.y))
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y}" y2="{y}" stroke="#6a737d" '
                   'stroke-dasharray="2 4"/>')
        out.append(f'<text x="{left + plot_w + 6}" y="{y}" dominant-baseline="middle" fill="#6a737d" '
                   f'font-size="11">{escape(ref.label)}</text>')

    for s, color in zip(chart.series, colors, strict=True):
        if s.style == "band":
            _band(out, s, color, px, py)
        elif s.style == "scatter":
            _scatter(out, s, color, px, py, top + plot_h)
        else:
            _line(out, s, color, px, py)
    out.append("</svg>")
    return Markup("".join(out))


def _line(out: list[str], s: Series, color: str, px, py) -> None:  # noqa: ANN001
    segments: list[list[tuple[float, float]]] = [[]]
    for x, y in s.points:
        if y is None or not math.isfinite(y):
            segments.append([])
        else:
            segments[-1].append((x, y))
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    for seg in segments:
        if not seg:
            continue
        coords: list[str] = []
        for j, (x, y) in enumerate(seg):
            if s.style == "step" and j > 0:
                coords.append(f"{_fmt(px(x))},{_fmt(py(seg[j - 1][1]))}")
            coords.append(f"{_fmt(px(x))},{_fmt(py(y))}")
        if len(seg) == 1:
            out.append(f'<circle cx="{coords[0].split(",")[0]}" cy="{coords[0].split(",")[1]}" r="2.5" '
                       f'fill="{color}"/>')
        else:
            out.append(f'<polyline points="{" ".join(coords)}" fill="none" stroke="{color}" stroke-width="2" '
                       f'stroke-linejoin="round"{dash}/>')


def _band(out: list[str], s: Series, color: str, px, py) -> None:  # noqa: ANN001
    """The area between `s.lower` and the points' y, translucent (a spread over seeds)."""
    edge = [(x, y, low) for (x, y), low in zip(s.points, s.lower or [], strict=False)
            if y is not None and math.isfinite(y) and math.isfinite(low)]
    if len(edge) < 2:
        return
    coords = [f"{_fmt(px(x))},{_fmt(py(y))}" for x, y, _ in edge]
    coords += [f"{_fmt(px(x))},{_fmt(py(low))}" for x, _, low in reversed(edge)]
    out.append(f'<polygon class="band" points="{" ".join(coords)}" fill="{color}" fill-opacity="0.18" stroke="none"/>')


def _scatter(out: list[str], s: Series, color: str, px, py, floor_y: float) -> None:  # noqa: ANN001
    for j, (x, y) in enumerate(s.points):
        cx = px(x)
        failed = y is None or not math.isfinite(y)
        cy = floor_y - 6 if failed else py(y)
        title = s.titles[j] if s.titles and j < len(s.titles) else ""
        link = s.links[j] if s.links and j < len(s.links) else None
        tip = f"<title>{escape(title)}</title>" if title else ""
        if s.marker == "cross" or failed:
            mark_color = FAIL_COLOR if failed else color
            shape = (f'<g stroke="{mark_color}" stroke-width="2"><line x1="{_fmt(cx - 4)}" y1="{_fmt(cy - 4)}" '
                     f'x2="{_fmt(cx + 4)}" y2="{_fmt(cy + 4)}"/><line x1="{_fmt(cx - 4)}" y1="{_fmt(cy + 4)}" '
                     f'x2="{_fmt(cx + 4)}" y2="{_fmt(cy - 4)}"/>{tip}</g>')
        else:
            shape = (f'<circle cx="{_fmt(cx)}" cy="{_fmt(cy)}" r="3.5" fill="{color}" fill-opacity="0.75" '
                     f'stroke="#ffffff" stroke-width="0.8">{tip}</circle>')
        out.append(f'<a href="{escape(link)}">{shape}</a>' if link else shape)


def _legend_rows(items: list[tuple[Series, str]], width: float) -> list[list[tuple[Series, str, float]]]:
    rows: list[list[tuple[Series, str, float]]] = []
    used = width + 1
    for s, color in items:
        item = 30 + 7 * len(s.name) + 18
        if used + item > width:
            rows.append([])
            used = 0
        rows[-1].append((s, color, item))
        used += item
    return rows


def _legend(out: list[str], rows: list[list[tuple[Series, str, float]]], left: float, top: float) -> None:
    for r, row in enumerate(rows):
        x, y = left, top + 20 * r + 8
        for s, color, item in row:
            if s.style == "scatter" and s.marker == "cross":
                out.append(f'<g stroke="{color}" stroke-width="2"><line x1="{x + 8}" y1="{y - 4}" x2="{x + 16}" '
                           f'y2="{y + 4}"/><line x1="{x + 8}" y1="{y + 4}" x2="{x + 16}" y2="{y - 4}"/></g>')
            elif s.style == "scatter":
                out.append(f'<circle cx="{x + 12}" cy="{y}" r="4" fill="{color}"/>')
            else:
                dash = ' stroke-dasharray="6 4"' if s.dashed else ""
                out.append(f'<line x1="{x}" x2="{x + 24}" y1="{y}" y2="{y}" stroke="{color}" '
                           f'stroke-width="2.5"{dash}/>')
            out.append(f'<text x="{x + 30}" y="{y}" dominant-baseline="middle" fill="#24292f">'
                       f"{escape(s.name)}</text>")
            x += item
