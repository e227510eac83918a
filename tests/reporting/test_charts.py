"""`--chart`: a valid PNG/SVG of a sensible size, drawn from the table's own numbers."""

from __future__ import annotations

import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import MG
from report_helpers import seed

from mailgated.db import Database
from mailgated.reporting import charts
from mailgated.reporting.reports import UserReportRow


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [t.text.strip() for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text]


def test_users_chart_png_and_svg(db: Database, mg: MG, tmp_path: Path) -> None:
    """report users --chart writes a readable PNG and SVG while the CSV stays on stdout."""
    seed(db)
    png = tmp_path / "users.png"
    result = mg("report", "users", "--format", "csv", "--chart", str(png))
    assert result.out.startswith("month,")  # the chart note goes to stderr, CSV stays clean
    width, height = png_size(png)
    assert 800 <= width <= 2500 and 600 <= height <= 2000
    assert 10_000 < png.stat().st_size < 2_000_000
    svg = tmp_path / "users.svg"
    mg("report", "users", "--chart", str(svg))
    texts = svg_texts(svg)
    assert "Cases per user per month (month of creation)" in texts
    assert "Average delay to close (closed cases)" in texts
    assert {"cases", "days", "month", "responsible", "demo", "boss", "(nobody)"} <= set(texts)
    assert "all users" in texts
    assert "2026-02" in texts  # the empty month is on the axis
    # the bar labels are the table's counts (3 cases for demo in 2025-12, …)
    table = mg("report", "users", "--format", "json").json()
    assert {str(r["cases"]) for r in table} <= set(texts)


def test_series_are_the_table_summed(db: Database, mg: MG) -> None:
    """The chart's series are the report table's numbers, summed per user and month."""
    seed(db)
    rows = [
        UserReportRow(**r, category=None) for r in mg("report", "users", "--format", "json").json()
    ]
    series = charts.user_series(rows)
    assert series.months == ["2025-12", "2026-01", "2026-02", "2026-03"]
    assert series.cases["demo"] == [3, 1, 0, 0]
    assert series.cases["boss"] == [0, 0, 0, 1]
    assert sum(sum(v) for v in series.cases.values()) == sum(r.cases for r in rows)
    assert series.delay_days["demo"][0] == pytest.approx(180000 / 86400)
    assert series.delay_days["demo"][1] is None  # nothing closed: no point, not zero
    assert series.overall_delay_days[0] == pytest.approx(180000 / 86400)  # only demo closed
    assert series.overall_delay_days[1:] == [None, None, None]


def test_bar_numbers_fit_their_bars() -> None:
    """Numbers on bars are written short (2.1k, 1.0M) so they fit."""
    assert [charts.compact(n) for n in (7, 999, 2140, 9960, 28609, 999_499, 999_500)] == [
        "7", "999", "2.1k", "10k", "29k", "999k", "1.0M"
    ]  # fmt: skip


def test_many_users_are_grouped_as_others() -> None:
    """Beyond the largest users the rest are one 'others' series."""
    rows = [
        UserReportRow("2026-01", f"u{i}", "S", None, 10 - i, 0, None, 0, 0, 0, None)
        for i in range(10)
    ]
    series = charts.user_series(rows)
    assert len(series.cases) == charts.MAX_USERS and series.cases["others"] == [1 + 2 + 3]


def test_sections_chart(db: Database, mg: MG, tmp_path: Path) -> None:
    """report sections --chart draws every section and state, as SVG and PNG."""
    seed(db)
    svg = tmp_path / "sections.svg"
    mg("report", "sections", "--chart", str(svg))
    texts = svg_texts(svg)
    assert "Cases by section and state (each section's own cases)" in texts
    assert {"Sales", "Support Level 1", "Support Level 2", "draft", "cancelled"} <= set(texts)
    png = tmp_path / "sections.png"
    mg("report", "sections", "--chart", str(png))
    assert png_size(png)[0] >= 800


def test_without_matplotlib_one_line(
    db: Database, mg: MG, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No matplotlib (the [charts] extra not installed): one line, non-zero, nothing written."""
    seed(db)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    for command in ("users", "sections"):
        chart = tmp_path / f"{command}.png"
        result = mg("report", command, "--chart", str(chart), ok=False)
        assert result.code != 0 and result.out == ""
        assert result.err.strip() == (
            "mailgated: error: --chart needs matplotlib, which is missing:"
            " install it with pip install matplotlib"
        )
        assert not chart.exists()
    assert mg("report", "users", "--format", "csv").out.startswith("month,")  # the rest works
