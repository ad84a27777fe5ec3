"""Line charts of the admin index, drawn as server-side SVG: axes with values, readable units.

No JavaScript chart library: the index must render from a cached summary in one request, work with
scripts blocked and print. This module only computes geometry and labels; the template
`admin/backups_app/chart.svg` draws them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from django.utils import formats
from django.utils.timezone import localtime
from django.utils.translation import gettext

WIDTH = 340
HEIGHT = 150
LEFT = 56  # room for the y labels ("1.5 GB")
RIGHT = 14
TOP = 10
BOTTOM = 26  # room for the x labels (dates)
TICKS = 4
# The SVG is drawn at about its display size (a quarter of a 1400 px screen), so that its 11 px
# labels stay 11 px: a larger viewBox scaled down made them unreadable.


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class LineChart:
    """One series: its polyline, its dots (with a hover title each) and both axes' ticks."""

    title: str
    css_class: str
    points: str
    dots: list[Dot]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


@dataclass(frozen=True)
class Unit:
    """A unit to label an axis in: values are divided by `factor` and followed by `symbol`."""

    factor: float
    symbol: str

    def label(self, value: float) -> str:
        scaled = value / self.factor
        number = formats.number_format(scaled, 0 if scaled == int(scaled) else 1)
        return f"{number} {self.symbol}"


def size_unit(maximum: float) -> Unit:
    """Bytes, KB, MB, GB or TB (powers of 1024, like Django's filesizeformat) for axis labels."""
    for power, symbol in ((4, gettext("TB")), (3, gettext("GB")), (2, gettext("MB")), (1, gettext("KB"))):
        if maximum >= 1024**power:
            return Unit(1024**power, symbol)
    return Unit(1, gettext("B"))


def duration_unit(maximum: float) -> Unit:
    """Seconds up to two minutes, minutes up to two hours, then hours."""
    if maximum >= 7200:
        return Unit(3600, gettext("h"))
    if maximum >= 120:
        return Unit(60, gettext("min"))
    return Unit(1, gettext("s"))


def nice_step(maximum: float, unit: Unit, ticks: int = TICKS) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten, in the axis unit) giving about `ticks` lines."""
    raw = maximum / unit.factor / ticks
    if raw <= 0:
        return unit.factor
    magnitude = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= multiple * magnitude:
            return multiple * magnitude * unit.factor
    return 10 * magnitude * unit.factor  # unreachable: 10 * magnitude > raw by construction


def line_chart(
    *, title: str, css_class: str, times: list[datetime], values: list[float], unit: Unit,
    dot_titles: list[str],
) -> LineChart:
    """Scale one series into the chart box: x by time, y from zero to a round top."""
    top_value = max(values, default=0)
    step = nice_step(top_value or unit.factor, unit)
    y_top = step * max(1, math.ceil((top_value or step) / step))
    plot_height = HEIGHT - BOTTOM - TOP
    plot_width = WIDTH - RIGHT - LEFT

    def y_of(value: float) -> float:
        return round(TOP + plot_height * (1 - value / y_top), 1)

    first, last = (min(times), max(times)) if times else (None, None)
    span = (last - first).total_seconds() if times else 0

    def x_of(moment: datetime) -> float:
        if not span:
            return round(LEFT + plot_width / 2, 1)
        return round(LEFT + plot_width * (moment - first).total_seconds() / span, 1)

    coordinates = [(x_of(moment), y_of(value)) for moment, value in zip(times, values)]
    y_ticks = [Tick(y_of(step * index), unit.label(step * index)) for index in range(round(y_top / step) + 1)]
    x_ticks = []
    if times:
        moments = [first] if not span else [first, first + (last - first) / 2, last]
        x_ticks = [Tick(x_of(moment), _short_date(moment)) for moment in moments]
    return LineChart(
        title=title,
        css_class=css_class,
        points=" ".join(f"{x},{y}" for x, y in coordinates),
        dots=[Dot(x, y, dot_title) for (x, y), dot_title in zip(coordinates, dot_titles)],
        y_ticks=y_ticks,
        x_ticks=x_ticks,
    )


def _short_date(moment: datetime) -> str:
    # Month and day with the time: the axis spans days to weeks; the year is in the hover titles.
    return formats.date_format(localtime(moment), "m-d H:i")
