"""Charts as SVG drawn on the server: no charting library, no script, nothing fetched. Each
chart has a title and a text alternative for screen readers; the numbers are also in a
table under it on the page."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = ("#2f6fb1", "#e08a1e", "#3a9a5b", "#c2413b", "#7b5ea7", "#8c6d46", "#d16ba5",
           "#6b7785", "#a9a62f", "#2aa3b5")
INK, GRID, FONT = "#24292f", "#d8dee4", "font-family=\"system-ui, sans-serif\""


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" {FONT} '
        f'font-size="12"><title>{escape(title)}</title>{"".join(body)}</svg>')


def _text(x: float, y: float, text: object, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{INK}" {extra}>'
            f"{escape(str(text))}</text>")


def bars(items: Sequence[tuple[str, float]], title: str, *,
         value_text: Callable[[float], str] = lambda v: f"{v:g}",
         maximum: float | None = None, width: int = 560) -> Markup:
    """Horizontal bars, one a row, labelled, with the value at the end."""
    if not items:
        return _empty(title, width)
    row, left, right = 24, 170, 80
    top = max(maximum or 0, *(v for _, v in items)) or 1
    height = row * len(items) + 8
    span = width - left - right
    body = []
    for i, (name, value) in enumerate(items):
        y = 4 + i * row
        w = max(0.0, span * value / top)
        body.append(_text(left - 8, y + 15, _clip(name, 26), "end"))
        body.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" '
                    f'fill="{color(i)}" rx="2"><title>{escape(name)}: '
                    f"{escape(value_text(value))}</title></rect>")
        body.append(_text(left + w + 6, y + 15, value_text(value)))
    return _svg(width, height, title, body)


def columns(labels: Sequence[str], series: Mapping[str, Sequence[int]], title: str, *,
            width: int = 720, height: int = 240) -> Markup:
    """Stacked columns: one column a label (e.g. a day), one colour a series, a legend."""
    if not labels or not series:
        return _empty(title, width)
    left, bottom, top_pad, legend_w = 40, 36, 10, 170
    plot_w, plot_h = width - left - legend_w, height - bottom - top_pad
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top = max(totals) or 1
    slot = plot_w / len(labels)
    bar_w = max(2.0, min(36.0, slot * 0.7))
    body = [f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" '
            f'y2="{top_pad + plot_h}" stroke="{GRID}"/>']
    for tick in _ticks(top):
        y = top_pad + plot_h - plot_h * tick / top
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                    f'stroke="{GRID}" stroke-dasharray="2 3"/>')
        body.append(_text(left - 6, y + 4, tick, "end"))
    every = max(1, round(len(labels) / 10))
    for i, name in enumerate(labels):
        x = left + i * slot + (slot - bar_w) / 2
        y = top_pad + plot_h
        for s, (key, values) in enumerate(series.items()):
            h = plot_h * values[i] / top
            if h <= 0:
                continue
            y -= h
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                        f'fill="{color(s)}"><title>{escape(name)} · {escape(key)}: '
                        f"{values[i]}</title></rect>")
        if i % every == 0:
            body.append(_text(x + bar_w / 2, top_pad + plot_h + 16, name[5:] or name,
                              "middle"))
    for s, key in enumerate(series):
        y = top_pad + 8 + s * 18
        body.append(f'<rect x="{width - legend_w + 14}" y="{y - 9}" width="11" height="11" '
                    f'fill="{color(s)}"/>')
        body.append(_text(width - legend_w + 30, y, _clip(key.replace("_", " "), 20)))
    return _svg(width, height, title, body)


def _ticks(top: int) -> list[int]:
    step = max(1, round(top / 4))
    return list(range(step, top + 1, step))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _empty(title: str, width: int) -> Markup:
    return _svg(width, 40, title, [_text(8, 24, "No data in this period.",
                                         extra='fill-opacity="0.7"')])


# Time-to bins, in hours: cases here decide in seconds, real ones in days.
HOUR_BINS: tuple[tuple[float, str], ...] = (
    (1 / 60, "< 1 min"), (10 / 60, "1–10 min"), (1, "10–60 min"), (4, "1–4 h"),
    (24, "4–24 h"), (72, "1–3 d"), (float("inf"), "> 3 d"))


def histogram(hours: Sequence[float], title: str) -> Markup:
    """How many cases fell in each time bin."""
    counts = binned(hours)
    return bars(list(counts.items()), title, value_text=lambda v: f"{v:.0f}")


def binned(hours: Sequence[float]) -> dict[str, int]:
    counts = dict.fromkeys((name for _, name in HOUR_BINS), 0)
    for value in hours:
        for upper, name in HOUR_BINS:
            if value < upper:
                counts[name] += 1
                break
    return counts
