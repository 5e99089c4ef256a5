"""What the console's pages show, drawn from what the API returns: amounts, charts, timelines.

Pure functions of API schemas and plain values; no queries here. Charts are inline SVG built
from server data, so the pages need no chart library.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from markupsafe import Markup


def money(micros: int | None, currency: str) -> str:
    """Integer micro-units with the currency: 2500 -> 'USD 0.002500' (exact, no float)."""
    if micros is None:
        return ""
    whole, part = divmod(abs(micros), 1_000_000)
    return f"{currency} {'-' if micros < 0 else ''}{whole:,}.{part:06d}"


def when(value: dt.datetime | str | None) -> Markup:
    """A <time> in UTC ISO form; the page's script shows it in the viewer's time zone."""
    if value is None:
        return Markup("")
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    utc = value.astimezone(dt.UTC)
    iso = utc.isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{0}">{1} UTC</time>').format(iso, f"{utc:%Y-%m-%d %H:%M}")


def seconds(value: float) -> str:
    minutes, secs = divmod(max(0.0, value), 60)
    return f"{int(minutes)}:{secs:05.2f}"


# ---------------------------------------------------------------------------- earnings chart


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    micros: int


def calendar(start: dt.date, end: dt.date, *, monthly: bool) -> list[str]:
    """Every day (YYYY-MM-DD) or month (YYYY-MM) in [start, end), so empty ones show too."""
    keys: list[str] = []
    day = start
    while day < end:
        key = f"{day:%Y-%m}" if monthly else f"{day:%Y-%m-%d}"
        if not keys or keys[-1] != key:
            keys.append(key)
        day += dt.timedelta(days=1)
    return keys


def bar_chart(bars: Sequence[Bar], currency: str, *, width: int = 760, height: int = 220) -> Markup:
    """Earnings per day or month as an SVG bar chart (negative bars: reversals won)."""
    pad_left, pad_bottom, pad_top = 86, 36, 14
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    top = max([b.micros for b in bars] + [1])
    bottom = min([b.micros for b in bars] + [0])
    span = top - bottom
    zero_y = pad_top + plot_h * top / span

    def y(value: int) -> float:
        return pad_top + plot_h * (top - value) / span

    step = plot_w / max(1, len(bars))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Earnings per period" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{pad_left}" x2="{width - 8}" y1="{zero_y:.1f}" y2="{zero_y:.1f}" '
        'class="axis"/>',
        f'<text x="{pad_left - 6}" y="{pad_top + 4}" class="tick" text-anchor="end">'
        f"{escape(money(top, currency))}</text>",
        f'<text x="{pad_left - 6}" y="{zero_y + 4:.1f}" class="tick" text-anchor="end">0</text>',
    ]
    every = max(1, len(bars) // 10)
    for i, bar in enumerate(bars):
        x = pad_left + i * step + step * 0.15
        w = max(1.0, step * 0.7)
        y0, y1 = sorted((y(bar.micros), zero_y))
        title = escape(f"{bar.label}: {money(bar.micros, currency)}")
        parts.append(
            f'<rect class="bar{" negative" if bar.micros < 0 else ""}" x="{x:.1f}" '
            f'y="{y0:.1f}" width="{w:.1f}" height="{max(0.5, y1 - y0):.1f}" '
            f'data-period="{escape(bar.label)}" data-micros="{bar.micros}">'
            f"<title>{title}</title></rect>"
        )
        if i % every == 0:
            short = bar.label[5:] if len(bar.label) == 10 else bar.label
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="{height - pad_bottom + 16}" class="tick" '
                f'text-anchor="middle">{escape(short)}</text>'
            )
    parts.append("</svg>")
    # Every interpolated text above went through `escape`; numbers are formatted floats.
    return Markup("".join(parts))  # noqa: S704


# ---------------------------------------------------------------------------- evidence timeline


@dataclass(frozen=True, slots=True)
class Passage:
    """The span of the evidence in one recording, to play."""

    start: float
    end: float


def passages(evidence: Sequence[dict[str, Any]]) -> tuple[Passage, Passage] | None:
    """The matched passage in the generated piece and in the reference track."""
    if not evidence:
        return None
    return (
        Passage(min(e["query_start"] for e in evidence), max(e["query_end"] for e in evidence)),
        Passage(
            min(e["reference_start"] for e in evidence),
            max(e["reference_end"] for e in evidence),
        ),
    )


def timeline(
    evidence: Sequence[dict[str, Any]],
    *,
    piece_seconds: float,
    reference_seconds: float | None,
    width: int = 760,
) -> Markup:
    """The generated piece (top) against the reference track (bottom), each evidence interval
    drawn in both and joined, labelled with its transposition and similarity."""
    # Without the track (an AI company may not read it) the lane ends where the evidence does.
    known = reference_seconds is not None
    reference_seconds = reference_seconds or max(
        [e["reference_end"] for e in evidence] + [piece_seconds]
    )
    reference_end = seconds(reference_seconds) + ("" if known else " (end of evidence)")
    left, right = 96, 12
    lane = width - left - right
    top_y, bottom_y, lane_h = 26, 118, 26
    height = bottom_y + lane_h + 32

    def qx(t: float) -> float:
        return left + lane * t / max(piece_seconds, 1e-6)

    def rx(t: float) -> float:
        return left + lane * t / max(reference_seconds or 1.0, 1e-6)

    parts = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Evidence timeline" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="4" y="{top_y + 17}" class="lane-label">generated</text>',
        f'<text x="4" y="{bottom_y + 17}" class="lane-label">reference</text>',
        f'<rect class="lane" x="{left}" y="{top_y}" width="{lane}" height="{lane_h}"/>',
        f'<rect class="lane" x="{left}" y="{bottom_y}" width="{lane}" height="{lane_h}"/>',
        f'<text x="{left}" y="{top_y - 6}" class="tick">0:00</text>',
        f'<text x="{left + lane}" y="{top_y - 6}" class="tick" text-anchor="end">'
        f"{seconds(piece_seconds)}</text>",
        f'<text x="{left}" y="{bottom_y + lane_h + 16}" class="tick">0:00</text>',
        f'<text x="{left + lane}" y="{bottom_y + lane_h + 16}" class="tick" text-anchor="end">'
        f"{escape(reference_end)}</text>",
    ]
    for i, e in enumerate(evidence):
        q0, q1 = qx(e["query_start"]), qx(e["query_end"])
        r0, r1 = rx(e["reference_start"]), rx(e["reference_end"])
        shift = int(e.get("transposition", 0))
        label = f"{shift:+d} st" if shift else "same key"
        title = escape(
            f"piece {seconds(e['query_start'])}-{seconds(e['query_end'])} ~ track "
            f"{seconds(e['reference_start'])}-{seconds(e['reference_end'])}, "
            f"similarity {e['similarity']:.2f}, {label}"
        )
        parts.append(
            f'<g class="evidence" data-index="{i}"><title>{title}</title>'
            f'<polygon class="link" points="{q0:.1f},{top_y + lane_h} {q1:.1f},{top_y + lane_h} '
            f'{r1:.1f},{bottom_y} {r0:.1f},{bottom_y}"/>'
            f'<rect class="span" x="{q0:.1f}" y="{top_y}" width="{max(1.0, q1 - q0):.1f}" '
            f'height="{lane_h}"/>'
            f'<rect class="span" x="{r0:.1f}" y="{bottom_y}" width="{max(1.0, r1 - r0):.1f}" '
            f'height="{lane_h}"/>'
            f'<text class="shift" x="{(q0 + q1 + r0 + r1) / 4:.1f}" '
            f'y="{(top_y + lane_h + bottom_y) / 2 + 4:.1f}" text-anchor="middle">'
            f"{escape(label)} · {e['similarity']:.2f}</text></g>"
        )
    parts.append("</svg>")
    # Every interpolated text above went through `escape`; numbers are formatted floats.
    return Markup("".join(parts))  # noqa: S704
