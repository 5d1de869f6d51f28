"""A loss chart drawn with Unicode braille (2×4 dots a cell): raw loss, smoothed loss, eval loss.

Pure: `draw_chart` returns Rich `Text` lines for a given size, so it is tested without an app.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

RAW_STYLE = "#5f7f9f"
SMOOTH_STYLE = "bold #ffaf00"
EVAL_STYLE = "bold #ff5fd7"
AXIS_STYLE = "#808080"
GUTTER = 7  # y labels (6) + axis (1)

# Dot bit of braille pattern U+2800 for (column, row) inside one cell.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))

Point = tuple[int, float]
CAP = 2048  # buckets kept per series: drawing costs O(CAP) however long the run


class Series:
    """A loss history in at most CAP buckets of equal step width, each with its min, max and mean."""

    def __init__(self, cap: int = CAP):
        self.cap = cap
        self.width = 1  # steps per bucket; doubles whenever the buckets overflow
        self.buckets: list[list[float]] = []  # [key, lo, hi, total, count] with key = step // width

    @classmethod
    def of(cls, points: Sequence[Point], cap: int = CAP) -> Series:
        series = cls(cap)
        for step, value in points:
            series.add(step, value)
        return series

    def __len__(self) -> int:
        return len(self.buckets)

    def add(self, step: int, value: float) -> None:
        key = step // self.width
        last = self.buckets[-1] if self.buckets else None
        if last is not None and last[0] == key:
            last[1], last[2] = min(last[1], value), max(last[2], value)
            last[3] += value
            last[4] += 1
        else:
            self.buckets.append([key, value, value, value, 1])
        if len(self.buckets) > self.cap:
            self._halve()

    def _halve(self) -> None:
        self.width *= 2
        merged: list[list[float]] = []
        for key, lo, hi, total, count in self.buckets:
            key //= 2
            if merged and merged[-1][0] == key:
                m = merged[-1]
                m[1], m[2], m[3], m[4] = min(m[1], lo), max(m[2], hi), m[3] + total, m[4] + count
            else:
                merged.append([key, lo, hi, total, count])
        self.buckets = merged

    def bands(self) -> list[tuple[int, float, float, float]]:
        """(first step of the bucket, min, max, mean) per bucket."""
        return [(int(key * self.width), lo, hi, total / count) for key, lo, hi, total, count in self.buckets]


class BrailleCanvas:
    """Pixels in layers; a cell shows the union of its dots in the colour of its top layer."""

    def __init__(self, width: int, height: int, layers: Sequence[str]):
        self.width, self.height = width, height
        self.layers = {name: bytearray(width * height) for name in layers}  # bottom → top

    @property
    def px_width(self) -> int:
        return self.width * 2

    @property
    def px_height(self) -> int:
        return self.height * 4

    def set(self, layer: str, x: int, y: int) -> None:
        if 0 <= x < self.px_width and 0 <= y < self.px_height:
            self.layers[layer][(y // 4) * self.width + x // 2] |= _DOTS[x % 2][y % 4]

    def vline(self, layer: str, x: int, y0: int, y1: int) -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            self.set(layer, x, y)

    def line(self, layer: str, x0: int, y0: int, x1: int, y1: int) -> None:
        """Bresenham line between two pixels."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.set(layer, x0, y0)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err, x0 = err + dy, x0 + sx
            if e2 <= dx:
                err, y0 = err + dx, y0 + sy

    def row(self, y: int, styles: dict[str, str]) -> Text:
        """One row of cells as styled text."""
        text = Text()
        names = list(self.layers)
        for x in range(self.width):
            i = y * self.width + x
            bits, style = 0, ""
            for name in names:
                b = self.layers[name][i]
                if b:
                    bits |= b
                    style = styles[name]
            text.append(chr(0x2800 + bits) if bits else " ", style)
        return text


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, int(q * (len(sorted_values) - 1))))]


def y_range(raw: Series, smooth: Series, evals: Sequence[Point]) -> tuple[float, float]:
    """Loss range to show: the smoothed and eval curves in full, raw spikes beyond 2–98% clipped."""
    lows = [b[3] for b in smooth.bands()] + [v for _, v in evals]
    highs = list(lows)
    bands = raw.bands()
    if bands:
        low_ends, high_ends = sorted(b[1] for b in bands), sorted(b[2] for b in bands)
        clip = len(bands) > 50
        lows.append(_quantile(low_ends, 0.02) if clip else low_ends[0])
        highs.append(_quantile(high_ends, 0.98) if clip else high_ends[-1])
    lo, hi = min(lows), max(highs)
    pad = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 1e-3)
    return lo - pad, hi + pad


def fmt_tick(v: float) -> str:
    return f"{v:6.3g}"[:6] if abs(v) < 1e5 else f"{v:6.0e}"[:6]


def draw_chart(raw: Series, smooth: Series, evals: Sequence[Point], width: int, height: int) -> list[Text]:
    """Chart lines (height rows of width cells): y labels on the left, first/last step below."""
    width, height = max(width, GUTTER + 4), max(height, 3)
    plot_w, plot_h = width - GUTTER, height - 1
    raw_bands = raw.bands()
    if not raw_bands and not evals:
        blank = [Text(" " * width) for _ in range(height)]
        blank[height // 2] = Text("waiting for the first step…".center(width), AXIS_STYLE)
        return blank
    steps = [b[0] for b in raw_bands] + [s for s, _ in evals]
    x0, x1 = min(steps), max(steps)
    lo, hi = y_range(raw, smooth, evals)
    canvas = BrailleCanvas(plot_w, plot_h, ("raw", "smooth", "eval"))

    def px(step: int) -> int:
        return 0 if x1 == x0 else round((step - x0) / (x1 - x0) * (canvas.px_width - 1))

    def py(value: float) -> int:
        y = round((hi - value) / (hi - lo) * (canvas.px_height - 1))
        return min(canvas.px_height - 1, max(0, y))

    columns: dict[int, tuple[int, int]] = {}
    for step, low, high, _ in raw_bands:  # raw loss: the min–max band of each pixel column
        x, top, bottom = px(step), py(high), py(low)
        a, b = columns.get(x, (top, bottom))
        columns[x] = (min(a, top), max(b, bottom))
    for x, (a, b) in columns.items():
        canvas.vline("raw", x, a, b)
    smooth_points = [(step, mean) for step, _, _, mean in smooth.bands()]
    for layer, points in (("smooth", smooth_points), ("eval", evals)):
        per_column: dict[int, list[float]] = {}
        for step, value in points:
            per_column.setdefault(px(step), []).append(value)
        prev = None
        for x in sorted(per_column):
            y = py(sum(per_column[x]) / len(per_column[x]))
            if prev is None:
                canvas.set(layer, x, y)
            else:
                canvas.line(layer, prev[0], prev[1], x, y)
            prev = (x, y)
        if layer == "eval":  # eval points as small blocks so a single one is visible
            for x in per_column:
                y = py(sum(per_column[x]) / len(per_column[x]))
                for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                    canvas.set(layer, x + dx - (x % 2), y + dy - (y % 2))

    styles = {"raw": RAW_STYLE, "smooth": SMOOTH_STYLE, "eval": EVAL_STYLE}
    label_rows = {0: hi, plot_h - 1: lo}
    if plot_h >= 5:
        mid = (plot_h - 1) // 2
        label_rows[mid] = hi - (hi - lo) * (4 * mid + 1.5) / (canvas.px_height - 1)
    lines = []
    for r in range(plot_h):
        line = Text(fmt_tick(label_rows[r]) if r in label_rows else " " * 6, AXIS_STYLE)
        line.append("┤" if r in label_rows else "│", AXIS_STYLE)
        line.append_text(canvas.row(r, styles))
        lines.append(line)
    left, right = f"step {x0}", str(x1)
    gap = max(1, plot_w - len(left) - len(right))
    lines.append(Text(" " * 6 + "└" + left + " " * gap + right, AXIS_STYLE))
    return lines


def legend() -> str:
    """Console markup naming the three series in their colours."""
    return (f"[{RAW_STYLE}]━ raw[/] [{SMOOTH_STYLE}]━ smoothed[/] [{EVAL_STYLE}]■ eval[/]")
