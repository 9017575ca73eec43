"""Small inline SVG charts for the spend report: no library, no script, every label escaped.

Ids, models and team names are whatever users chose, so every piece of text goes through
:func:`esc` before it reaches the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

BAR = "#3b6fd8"
MUTED = "#6b7280"
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12"'


def esc(text: object) -> str:
    """Text safe inside HTML and SVG (elements and quoted attributes)."""
    return escape(str(text), quote=True)


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def hbars(labels: Sequence[str], values: Sequence[int], *, title: str, unit: str = "credits",
          width: int = 720) -> str:
    """A horizontal bar chart, one row per label, largest first as given."""
    if not labels:
        return f'<p class="empty">{esc(title)}: nothing in this window.</p>'
    row, left, right = 24, 200, 90
    height = row * len(labels) + 8
    top = max(max(values), 1)
    span = width - left - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" {FONT}><title>{esc(title)}</title>']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 4 + i * row
        w = max(1.0, span * value / top) if value > 0 else 0
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end"><title>{esc(label)}</title>'
                     f"{esc(_short(label))}</text>")
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="{BAR}" rx="2">'
                     f"<title>{esc(label)}: {value:,} {esc(unit)}</title></rect>")
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}" fill="{MUTED}">{value:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def columns(labels: Sequence[str], values: Sequence[int], *, title: str, unit: str = "credits",
            width: int = 720, height: int = 220) -> str:
    """A column chart over an ordered axis (days): a column per label, a few labels shown."""
    if not labels:
        return f'<p class="empty">{esc(title)}: nothing in this window.</p>'
    left, bottom, top_pad = 56, 28, 12
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    top = max(max(values), 1)
    step = plot_w / len(labels)
    every = max(1, len(labels) // 8)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" {FONT}><title>{esc(title)}</title>',
             f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 8}" y2="{top_pad + plot_h}" stroke="#ccc"/>',
             f'<text x="{left - 6}" y="{top_pad + 10}" text-anchor="end" fill="{MUTED}">{top:,}</text>',
             f'<text x="{left - 6}" y="{top_pad + plot_h}" text-anchor="end" fill="{MUTED}">0</text>']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * value / top
        x = left + i * step
        parts.append(f'<rect x="{x + step * 0.1:.1f}" y="{top_pad + plot_h - h:.1f}" width="{step * 0.8:.1f}" '
                     f'height="{h:.1f}" fill="{BAR}"><title>{esc(label)}: {value:,} {esc(unit)}</title></rect>')
        if i % every == 0 or i == len(labels) - 1:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - 8}" text-anchor="middle" '
                         f'fill="{MUTED}">{esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
