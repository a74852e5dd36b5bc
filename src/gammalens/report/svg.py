"""A small SVG plotting kit for the report: scales, ticks, axes, lines, markers, bands and swatches.

Everything is inline SVG text — no JavaScript, fonts or files — so the report opens offline and prints.
Coordinates are data coordinates unless a name says ``px``.

>>> p = Plot("demo", 320, 200, x=Scale(1, 1000, log=True), y=Scale(0, 1), xlabel="d (tokens)", ylabel="A")
>>> p.line([1, 10, 100], [0.9, 0.5, 0.1], stroke="#333")
>>> p.render().startswith("<svg")
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def fmt(value: float, digits: int = 3) -> str:
    """Compact number: 3 significant digits, no trailing zeros, thin exponents (1.2e-05 → 1.2×10⁻⁵)."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        text = f"{value:.{digits}g}"
        return text if "e" not in text else f"{value:.0f}"
    mantissa, exponent = f"{value:.{max(digits - 1, 0)}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    power = "10" + str(int(exponent)).translate(_SUPERSCRIPT)
    return power if mantissa == "1" else f"{mantissa}×{power}"


@dataclass(frozen=True)
class Scale:
    """Data range ``[lo, hi]`` of one axis, linear or logarithmic (base 10)."""

    lo: float
    hi: float
    log: bool = False
    powers: bool = False   # label log ticks as powers of ten (10⁴, 10⁵) even where plain numbers fit

    def __post_init__(self) -> None:
        if self.log and (self.lo <= 0 or self.hi <= 0):
            raise ValueError(f"log scale needs a positive range, got [{self.lo}, {self.hi}]")

    def unit(self, value: float) -> float:
        """Position of ``value`` in [0, 1] across the range."""
        if self.log:
            lo, hi = math.log10(self.lo), math.log10(self.hi)
            v = math.log10(value) if value > 0 else lo - 10.0
        else:
            lo, hi, v = self.lo, self.hi, value
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    def ticks(self, target: int = 6) -> list[tuple[float, str, bool]]:
        """Ticks as ``(value, label, major)``: powers of ten (with 2 and 5 when the range is short) or nice steps."""
        if self.log:
            return _log_ticks(self.lo, self.hi, self.powers)
        step = nice_step((self.hi - self.lo) / max(target - 1, 1))
        start = math.ceil(self.lo / step - 1e-9) * step
        out, k = [], 0
        while start + k * step <= self.hi + 1e-9 * step:
            v = start + k * step
            out.append((v, fmt(round(v, 12)), True))
            k += 1
        return out


def nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power * 1.0001:
            return m * power
    return 10 * power


def _power(v: float) -> str:
    k = math.log10(v)
    return "10" + str(round(k)).translate(_SUPERSCRIPT) if abs(k - round(k)) < 1e-9 else fmt(v)


def _log_ticks(lo: float, hi: float, powers: bool = False) -> list[tuple[float, str, bool]]:
    k0, k1 = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    decades = k1 - k0
    majors = (1, 2, 5) if decades <= 2 else (1,)
    stride = max(1, math.ceil(decades / 7))
    out = []
    for k in range(k0, k1 + 1):
        for m in range(1, 10):
            v = m * 10.0**k
            if v < lo * (1 - 1e-9) or v > hi * (1 + 1e-9):
                continue
            major = m in majors and (m != 1 or (k - k0) % stride == 0)
            out.append((v, (_power(v) if powers else fmt(v)) if major else "", major))
    return out


def nice_log_range(values: Sequence[float], pad: float = 1.3) -> tuple[float, float]:
    """A log-axis range covering the positive finite ``values``, padded and snapped outward."""
    vals = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not vals:
        return 1e-3, 1.0
    lo, hi = min(vals) / pad, max(vals) * pad
    if hi / lo < 10:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(10), mid * math.sqrt(10)
    return lo, hi


def nice_range(values: Sequence[float], include: Sequence[float] = (), pad: float = 0.06) -> tuple[float, float]:
    """A linear range covering ``values`` and ``include``, padded by ``pad`` of the span."""
    vals = [v for v in list(values) + list(include) if v is not None and math.isfinite(v)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


class Plot:
    """One chart: a frame with ticks, grid, axis labels and data drawn in data coordinates.

    Parameters
    ----------
    uid : str
        Unique id within the page (used for the clip path).
    width, height : int
        Size in px (the SVG scales with the page; this fixes the aspect ratio).
    x, y : Scale
        Axis ranges.
    """

    def __init__(self, uid: str, width: int, height: int, *, x: Scale, y: Scale, xlabel: str = "",
                 ylabel: str = "", title: str = "", margin: tuple[int, int, int, int] = (28, 16, 46, 62),
                 xticks: bool = True, yticks: bool = True) -> None:
        self.uid, self.width, self.height, self.x, self.y = uid, width, height, x, y
        self.xticks, self.yticks = xticks, yticks
        self.xlabel, self.ylabel, self.title = xlabel, ylabel, title
        self.top, self.right, self.bottom, self.left = margin
        self.items: list[str] = []
        self.overlay: list[str] = []

    # -- coordinates -------------------------------------------------------------------------------
    def px(self, x: float) -> float:
        return self.left + self.x.unit(x) * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        return self.height - self.bottom - self.y.unit(y) * (self.height - self.top - self.bottom)

    def _ok(self, x: float, y: float) -> bool:
        return (x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
                and not (self.x.log and x <= 0) and not (self.y.log and y <= 0))

    # -- data ----------------------------------------------------------------------------------------
    def line(self, xs: Sequence[float], ys: Sequence[float], *, stroke: str, width: float = 1.5,
             dash: str | None = None, opacity: float = 1.0, title: str | None = None) -> None:
        """A polyline; points that cannot be drawn (NaN, ≤ 0 on a log axis) break it."""
        segments, current = [], []
        for x, y in zip(xs, ys, strict=True):
            if self._ok(x, y):
                current.append(f"{self.px(x):.1f},{self.py(y):.1f}")
            elif current:
                segments.append(current)
                current = []
        if current:
            segments.append(current)
        d = " ".join("M" + " L".join(seg) for seg in segments if len(seg) > 1)
        if not d:
            return
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        tip = f"<title>{esc(title)}</title>" if title else ""
        self.items.append(f'<path d="{d}" fill="none" stroke="{stroke}" stroke-width="{width}" '
                          f'stroke-opacity="{opacity}" stroke-linejoin="round"{extra}>{tip}</path>')

    def markers(self, xs: Sequence[float], ys: Sequence[float], *, fill: str | Sequence[str], shape: str = "circle",
                size: float = 3.5, stroke: str = "#fff", titles: Sequence[str] | None = None,
                opacity: float = 1.0) -> None:
        fills = [fill] * len(xs) if isinstance(fill, str) else list(fill)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            if not self._ok(x, y):
                continue
            tip = f"<title>{esc(titles[i])}</title>" if titles else ""
            self.items.append(marker(shape, self.px(x), self.py(y), size, fills[i], stroke, opacity, tip))

    def errorbars(self, xs: Sequence[float], lows: Sequence[float], highs: Sequence[float], *, stroke: str,
                  width: float = 1.0, opacity: float = 0.8, cap: float = 3.0) -> None:
        for x, lo, hi in zip(xs, lows, highs, strict=True):
            if not (self._ok(x, lo) and self._ok(x, hi)):
                continue
            X, Y0, Y1 = self.px(x), self.py(lo), self.py(hi)
            self.items.append(f'<path d="M{X:.1f},{Y0:.1f} V{Y1:.1f} M{X - cap:.1f},{Y0:.1f} H{X + cap:.1f} '
                              f'M{X - cap:.1f},{Y1:.1f} H{X + cap:.1f}" stroke="{stroke}" stroke-width="{width}" '
                              f'stroke-opacity="{opacity}" fill="none"/>')

    def rect(self, x0: float, y0: float, x1: float, y1: float, *, fill: str, opacity: float = 1.0,
             stroke: str = "none", title: str | None = None) -> None:
        X0, X1 = sorted((self.px(x0), self.px(x1)))
        Y0, Y1 = sorted((self.py(y0), self.py(y1)))
        tip = f"<title>{esc(title)}</title>" if title else ""
        self.items.append(f'<rect x="{X0:.1f}" y="{Y0:.1f}" width="{max(X1 - X0, 0.5):.1f}" '
                          f'height="{max(Y1 - Y0, 0.5):.1f}" fill="{fill}" fill-opacity="{opacity}" '
                          f'stroke="{stroke}">{tip}</rect>')

    def band_x(self, x0: float, x1: float, *, fill: str, opacity: float = 0.12) -> None:
        """A vertical band over the whole y range (e.g. the fit range)."""
        self.rect(x0, self.y.lo, x1, self.y.hi, fill=fill, opacity=opacity)

    def band_y(self, y0: float, y1: float, *, fill: str, opacity: float = 0.08) -> None:
        self.rect(self.x.lo, y0, self.x.hi, y1, fill=fill, opacity=opacity)

    def hline(self, y: float, *, stroke: str = "#555", dash: str | None = "5 4", width: float = 1.2,
              label: str | None = None, anchor: str = "end") -> None:
        self.line([self.x.lo, self.x.hi], [y, y], stroke=stroke, dash=dash, width=width)
        if label:
            X = self.px(self.x.hi) - 4 if anchor == "end" else self.px(self.x.lo) + 4
            self.overlay.append(text(X, self.py(y) - 4, label, anchor=anchor, size=11, fill=stroke))

    def vline(self, x: float, *, stroke: str = "#555", dash: str | None = "5 4", width: float = 1.2,
              label: str | None = None) -> None:
        self.line([x, x], [self.y.lo, self.y.hi], stroke=stroke, dash=dash, width=width)
        if label:
            self.overlay.append(text(self.px(x) + 4, self.top + 12, label, anchor="start", size=11, fill=stroke))

    def label(self, x: float, y: float, content: str, *, anchor: str = "start", size: int = 11,
              fill: str = "#222", dx: float = 0, dy: float = 0, weight: str = "normal") -> None:
        if self._ok(x, y):
            self.overlay.append(text(self.px(x) + dx, self.py(y) + dy, content, anchor=anchor, size=size, fill=fill,
                                     weight=weight))

    # -- frame ---------------------------------------------------------------------------------------
    def _frame(self) -> list[str]:
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.top, self.height - self.bottom
        out = [f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fff" stroke="none"/>']
        for v, lab, major in self.x.ticks() if self.xticks else []:
            X = self.px(v)
            out.append(f'<line x1="{X:.1f}" y1="{y0}" x2="{X:.1f}" y2="{y1}" stroke="#e6e6e6" '
                       f'stroke-width="{1 if major else 0.5}"/>')
            out.append(f'<line x1="{X:.1f}" y1="{y1}" x2="{X:.1f}" y2="{y1 + (5 if major else 3)}" stroke="#444"/>')
            if lab:
                out.append(text(X, y1 + 17, lab, anchor="middle", size=11, fill="#333"))
        for v, lab, major in self.y.ticks(target=5):
            Y = self.py(v)
            out.append(f'<line x1="{x0}" y1="{Y:.1f}" x2="{x1}" y2="{Y:.1f}" stroke="#e6e6e6" '
                       f'stroke-width="{1 if major else 0.5}"/>')
            if self.yticks:
                out.append(f'<line x1="{x0 - (5 if major else 3)}" y1="{Y:.1f}" x2="{x0}" y2="{Y:.1f}" stroke="#444"/>')
            if lab and self.yticks:
                out.append(text(x0 - 8, Y + 4, lab, anchor="end", size=11, fill="#333"))
        return out

    def render(self) -> str:
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.top, self.height - self.bottom
        clip = f"clip-{self.uid}"
        parts = [f'<svg class="plot" viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
                 f'height="{self.height}" role="img" aria-label="{esc(self.title or self.ylabel)}" {FONT}>',
                 f'<defs><clipPath id="{clip}"><rect x="{x0}" y="{y0}" width="{x1 - x0}" '
                 f'height="{y1 - y0}"/></clipPath></defs>']
        parts += self._frame()
        parts.append(f'<g clip-path="url(#{clip})">' + "".join(self.items) + "</g>")
        parts.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#444"/>')
        parts += self.overlay
        if self.title:
            parts.append(text(x0, y0 - 9, self.title, anchor="start", size=13, fill="#111", weight="600"))
        if self.xlabel:
            parts.append(text((x0 + x1) / 2, self.height - 8, self.xlabel, anchor="middle", size=12, fill="#222"))
        if self.ylabel:
            cy = (y0 + y1) / 2
            parts.append(f'<text x="14" y="{cy:.1f}" transform="rotate(-90 14 {cy:.1f})" text-anchor="middle" '
                         f'font-size="12" fill="#222">{esc(self.ylabel)}</text>')
        parts.append("</svg>")
        return "".join(parts)


def text(x: float, y: float, content: str, *, anchor: str = "start", size: int = 11, fill: str = "#222",
         weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
            f'font-weight="{weight}">{esc(content)}</text>')


def marker(shape: str, X: float, Y: float, size: float, fill: str, stroke: str, opacity: float = 1.0,
           inner: str = "") -> str:
    """One marker at pixel (X, Y): circle, square, diamond, triangle, star or cross."""
    style = f'fill="{fill}" stroke="{stroke}" stroke-width="1" fill-opacity="{opacity}"'
    s = size
    if shape == "circle":
        return f'<circle cx="{X:.1f}" cy="{Y:.1f}" r="{s:.1f}" {style}>{inner}</circle>'
    if shape == "square":
        return f'<rect x="{X - s:.1f}" y="{Y - s:.1f}" width="{2 * s:.1f}" height="{2 * s:.1f}" {style}>{inner}</rect>'
    if shape == "cross":
        return (f'<path d="M{X - s:.1f},{Y - s:.1f} L{X + s:.1f},{Y + s:.1f} M{X - s:.1f},{Y + s:.1f} '
                f'L{X + s:.1f},{Y - s:.1f}" stroke="{fill}" stroke-width="1.6" fill="none">{inner}</path>')
    if shape == "star":
        pts = []
        for k in range(10):
            r = s * (1.0 if k % 2 == 0 else 0.45)
            a = math.pi / 2 + k * math.pi / 5
            pts.append(f"{X + r * math.cos(a):.1f},{Y - r * math.sin(a):.1f}")
        return f'<polygon points="{" ".join(pts)}" {style}>{inner}</polygon>'
    corners = {"diamond": [(0, -1.3), (1.3, 0), (0, 1.3), (-1.3, 0)],
               "triangle": [(0, -1.2), (1.1, 0.8), (-1.1, 0.8)]}[shape]
    pts = " ".join(f"{X + a * s:.1f},{Y + b * s:.1f}" for a, b in corners)
    return f'<polygon points="{pts}" {style}>{inner}</polygon>'


def swatch(kind: str, color: str, *, dash: str | None = None, width: float = 2.0, shape: str = "circle",
           opacity: float = 1.0) -> str:
    """A 28 × 14 px legend swatch: a line, a marker, or a filled box."""
    head = '<svg class="swatch" width="28" height="14" viewBox="0 0 28 14" aria-hidden="true">'
    if kind == "line":
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        body = (f'<line x1="1" y1="7" x2="27" y2="7" stroke="{color}" stroke-width="{width}" '
                f'stroke-opacity="{opacity}"{extra}/>')
    elif kind == "box":
        body = f'<rect x="2" y="2" width="24" height="10" fill="{color}" fill-opacity="{opacity}" stroke="#999"/>'
    else:
        size = 6.5 if shape == "star" else 4.5
        body = marker(shape, 14, 7, size, color, "#fff" if shape != "cross" else color, opacity)
    return head + body + "</svg>"


def legend(items: Sequence[tuple[str, str]]) -> str:
    """An HTML legend: ``(swatch svg, label)`` pairs in a wrapping row."""
    cells = "".join(f'<span class="legend-item">{sw}<span>{esc(label)}</span></span>' for sw, label in items)
    return f'<div class="legend">{cells}</div>'
