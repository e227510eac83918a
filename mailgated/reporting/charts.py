"""Chart files (PNG or SVG) drawn from the rows of a report, with matplotlib.

matplotlib is a dependency of the package (so the README's install gives a working
`--chart`), imported only when a chart is asked for, with the non-interactive Agg backend
(a daemon host has no display). The series are computed here from the very
rows the table prints (`user_series`), so chart and table cannot disagree;
SVG text is kept as text, so the numbers on the bars can be read back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailgated.errors import Invalid
from mailgated.reporting.reports import STATES, SectionReportRow, UserReportRow

MAX_USERS = 8  # more users than this are summed as "others" to keep the chart readable


def require_matplotlib() -> Any:
    """The pyplot module on the Agg backend, or one line saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise Invalid(
            "--chart needs matplotlib, which is missing: install it with pip install matplotlib"
        ) from None
    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 10})
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class UserSeries:
    """Per user, per month: cases and the average delay to close in days."""

    months: list[str]
    cases: dict[str, list[int]]
    delay_days: dict[str, list[float | None]]
    overall_delay_days: list[float | None]  # all users together


def month_range(first: str, last: str) -> list[str]:
    """Every month from first to last, so empty months show as gaps, not as nothing."""
    months, day = [], dt.date.fromisoformat(first + "-01")
    while day.isoformat()[:7] <= last:
        months.append(day.isoformat()[:7])
        day = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return months


def user_series(rows: Sequence[UserReportRow]) -> UserSeries:
    """Sum the table's rows over sections (and categories) into user × month."""
    if not rows:
        return UserSeries([], {}, {}, [])
    months = month_range(min(r.month for r in rows), max(r.month for r in rows))
    totals: dict[str, int] = {}
    for r in rows:
        totals[r.user or "(nobody)"] = totals.get(r.user or "(nobody)", 0) + r.cases
    ranked = sorted(totals, key=lambda u: (-totals[u], u))
    shown = ranked if len(ranked) <= MAX_USERS else ranked[: MAX_USERS - 1]
    cases = {u: [0] * len(months) for u in shown}
    closed = {u: [0] * len(months) for u in shown}
    delay = {u: [0.0] * len(months) for u in shown}
    for r in rows:
        user = r.user or "(nobody)"
        if user not in cases:
            user = "others"
            cases.setdefault(user, [0] * len(months))
            closed.setdefault(user, [0] * len(months))
            delay.setdefault(user, [0.0] * len(months))
        i = months.index(r.month)
        cases[user][i] += r.cases
        closed[user][i] += r.closed
        delay[user][i] += (r.avg_close_seconds or 0) * r.closed
    days = {
        u: [
            delay[u][i] / closed[u][i] / 86400 if closed[u][i] else None for i in range(len(months))
        ]
        for u in cases
    }
    closed_all = [sum(closed[u][i] for u in cases) for i in range(len(months))]
    overall = [
        sum(delay[u][i] for u in cases) / closed_all[i] / 86400 if closed_all[i] else None
        for i in range(len(months))
    ]
    return UserSeries(months, cases, days, overall)


def users_chart(rows: Sequence[UserReportRow], path: str) -> None:
    """Cases per user per month (stacked bars) above the average delay to close (lines)."""
    plt = require_matplotlib()
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    series = user_series(rows)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 8), sharex=True, height_ratios=[3, 2], layout="constrained"
    )
    x = list(range(len(series.months)))
    base = [0] * len(x)
    highest = max((sum(c) for c in zip(*series.cases.values(), strict=True)), default=0)
    size = 10 if len(x) <= 12 else 8  # many months: narrower bars, smaller numbers
    bars = None
    for user, counts in series.cases.items():
        bars = top.bar(x, counts, bottom=base, label=user)
        # a number only where the segment is tall enough to hold it
        labels = [compact(c) if c and c >= 0.03 * highest else "" for c in counts]
        top.bar_label(bars, labels=labels, label_type="center", fontsize=size)
        base = [b + c for b, c in zip(base, counts, strict=True)]
    if bars is not None:  # each month's total above its stack
        top.bar_label(bars, labels=[compact(t) for t in base], fontsize=size, fontweight="bold")
        top.set_ylim(0, max(highest, 1) * 1.08)  # room for the totals
    top.set_title("Cases per user per month (month of creation)")
    top.set_ylabel("cases")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    top.legend(title="responsible", loc="upper left", bbox_to_anchor=(1.01, 1), reverse=True)
    for user, days in series.delay_days.items():
        bottom.plot(x, _gaps(days), marker="o", markersize=4, linewidth=1, label=user)
    if series.months:
        bottom.plot(
            x,
            _gaps(series.overall_delay_days),
            color="black",
            linewidth=2.5,
            marker="s",
            markersize=9,
            markerfacecolor="none",  # a frame around the users' dots, hiding none
            label="all users",
        )
    bottom.set_title("Average delay to close (closed cases)")
    bottom.set_ylabel("days")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("month")
    bottom.set_xticks(x, series.months, rotation=45, ha="right")
    bottom.legend(title="responsible", loc="upper left", bbox_to_anchor=(1.01, 1))
    if not x:
        top.text(0.5, 0.5, "no cases match", ha="center", transform=top.transAxes)
    _save(plt, fig, path)


def compact(count: int) -> str:
    """A bar's number, narrow enough for the bar: 950, 2.1k, 43k, 1.2M."""
    if count < 1000:
        return str(count)
    if count < 9_950:  # below what would round to "10.0k"
        return f"{count / 1000:.1f}k"
    if count < 999_500:
        return f"{count / 1000:.0f}k"
    return f"{count / 1_000_000:.1f}M"


def _gaps(values: Sequence[float | None]) -> list[float]:
    """None (no case closed that month) as NaN: a gap in the line, not a fall to zero."""
    return [float("nan") if v is None else v for v in values]


def sections_chart(rows: Sequence[SectionReportRow], path: str) -> None:
    """Each section's own cases as one horizontal bar, stacked by state."""
    plt = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.5 * max(len(rows), 1)), layout="constrained")
    labels = ["    " * r.depth + r.section for r in rows]
    y = list(range(len(rows)))
    left = [0] * len(rows)
    for state in STATES:
        counts = [r.own[state] for r in rows]
        bars = ax.barh(y, counts, left=left, label=state)
        ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], label_type="center")
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_yticks(y, labels)
    _indent_tree_labels(fig, ax)
    ax.invert_yaxis()  # the tree reads top-down
    ax.set_title("Cases by section and state (each section's own cases)")
    ax.set_xlabel("cases")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("section")
    ax.legend(title="state", loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(plt, fig, path)


def _indent_tree_labels(fig: Any, ax: Any) -> None:
    """Left-align the section names so a sub-section's indent shows (right-aligned, it would not).

    The labels are pushed left by the widest one's measured width, in points.
    """
    renderer = fig.canvas.get_renderer()
    ticks = ax.get_yticklabels()
    widest = max((t.get_window_extent(renderer).width for t in ticks), default=0)
    for tick in ticks:
        tick.set_horizontalalignment("left")
    ax.tick_params(axis="y", pad=widest * 72 / fig.dpi + 4)


def _save(plt: Any, fig: Any, path: str) -> None:
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise Invalid(f"cannot write chart {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
