"""`mailgated calendar`: RFC 5545 read back by two independent parsers; stable UIDs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import icalendar
import vobject
from conftest import MG

UTC = dt.UTC


def setup_cases(mg: MG) -> None:
    mg("user", "add", "demo", "--name", "Demo User", "--email", "demo@example.com")
    mg("user", "add", "boss", "--name", "Support Boss", "--email", "boss@example.com")
    mg("section", "add", "Support Level 1", "--parent", "Support Level 2")
    mg("partner", "add", "Agrolait")
    new = ["case", "new", "--section"]
    mg(*new, "Support Level 1", "--subject", "Visit Agrolait", "--partner", "Agrolait",
       "--user", "demo", "--date", "2026-12-01T10:00+01:00", "--duration", "1h30m")  # fmt: skip
    mg(*new, "Support Level 2", "--subject", "Call back", "--user", "boss",
       "--deadline", "2026-12-05T17:00Z")  # fmt: skip
    mg(*new, "Support Level 1", "--subject", "Cancelled meeting", "--user", "demo",
       "--date", "2026-12-02T08:00Z", "--duration", "2")  # fmt: skip
    mg(*new, "Support Level 1", "--subject", "No date at all", "--user", "demo")
    mg("case", "cancel", "3")


def export(mg: MG, tmp_path: Path, *args: str) -> bytes:
    target = tmp_path / "cases.ics"
    mg("calendar", *args, "--output", str(target))
    return target.read_bytes()


def test_calendar_events_and_todos(mg: MG, tmp_path: Path) -> None:
    """Dated cases become events, cases with only a deadline to-dos, undated cases nothing."""
    setup_cases(mg)
    data = export(mg, tmp_path)
    cal = icalendar.Calendar.from_ical(data)
    events = {str(e["uid"]): e for e in cal.walk("VEVENT")}
    todos = list(cal.walk("VTODO"))
    assert len(events) == 2 and len(todos) == 1  # the case without dates is not there
    visit = next(e for e in events.values() if str(e["summary"]) == "[1] Visit Agrolait")
    assert visit.decoded("dtstart") == dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert visit.decoded("dtend") == dt.datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert str(visit["organizer"]) == "mailto:demo@example.com"
    assert "Agrolait" in str(visit["description"])
    cancelled = next(e for e in events.values() if str(e["summary"]).startswith("[3]"))
    assert str(cancelled["status"]) == "CANCELLED"
    assert cancelled.decoded("dtend") - cancelled.decoded("dtstart") == dt.timedelta(hours=2)
    todo = todos[0]
    assert str(todo["summary"]) == "[2] Call back"
    assert todo.decoded("due") == dt.datetime(2026, 12, 5, 17, 0, tzinfo=UTC)
    assert str(todo["organizer"]) == "mailto:boss@example.com"
    assert b"DTSTART:20261201T090000Z" in data  # times are written in UTC


def test_second_parser_agrees(mg: MG, tmp_path: Path) -> None:
    """A second iCalendar parser (vobject) reads the same events, times and states."""
    setup_cases(mg)
    parsed = vobject.readOne(export(mg, tmp_path).decode("utf-8"))
    events = sorted(parsed.vevent_list, key=lambda e: e.summary.value)
    assert [e.summary.value for e in events] == ["[1] Visit Agrolait", "[3] Cancelled meeting"]
    assert events[0].dtstart.value == dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert events[0].dtend.value == dt.datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert events[1].status.value == "CANCELLED"
    assert parsed.vtodo.due.value == dt.datetime(2026, 12, 5, 17, 0, tzinfo=UTC)
    assert len({e.uid.value for e in events} | {parsed.vtodo.uid.value}) == 3


def test_uids_stable_and_moves_show(mg: MG, tmp_path: Path) -> None:
    """An event keeps its UID across exports, and a moved date shows in the next one."""
    setup_cases(mg)
    first = export(mg, tmp_path)
    assert export(mg, tmp_path) == first  # nothing changed, nothing differs
    mg("case", "set", "1", "--date", "2026-12-03T14:00Z")
    moved = icalendar.Calendar.from_ical(export(mg, tmp_path))
    before = icalendar.Calendar.from_ical(first)
    uids = [str(e["uid"]) for e in before.walk("VEVENT")]
    assert [str(e["uid"]) for e in moved.walk("VEVENT")] == uids
    visit = next(e for e in moved.walk("VEVENT") if str(e["summary"]).startswith("[1]"))
    assert visit.decoded("dtstart") == dt.datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    assert visit.decoded("dtend") == dt.datetime(2026, 12, 3, 15, 30, tzinfo=UTC)


def test_calendar_filters(mg: MG, tmp_path: Path) -> None:
    """--user, --section and the other filters pick the cases a calendar shows."""
    setup_cases(mg)

    def summaries(*args: str) -> list[str]:
        cal = icalendar.Calendar.from_ical(export(mg, tmp_path, *args))
        return sorted(str(c["summary"]) for c in cal.walk() if c.name in ("VEVENT", "VTODO"))

    assert summaries("--user", "boss") == ["[2] Call back"]
    assert summaries("--section", "Support Level 1") == [
        "[1] Visit Agrolait",
        "[3] Cancelled meeting",
    ]
    assert len(summaries("--section", "Support Level 2")) == 3  # with its sub-section
    assert summaries("--section", "Support Level 2", "--user", "boss") == ["[2] Call back"]
    assert summaries("--section", "Support Level 1", "--user", "boss") == []
    out = mg("calendar", "--section", "Nowhere", ok=False)
    assert out.code != 0 and out.err.strip() == (
        "mailgated: error: no section named 'Nowhere' (see `mailgated section list`)"
    )
    assert "no user with login 'ghost'" in mg("calendar", "--user", "ghost", ok=False).err
    bad = mg("case", "set", "1", "--date", "tomorrow", ok=False)
    assert bad.code != 0 and len(bad.err.strip().splitlines()) == 1 and "bad --date" in bad.err


def test_escaping_and_folding_survive_both_parsers(mg: MG, tmp_path: Path) -> None:
    """Commas, semicolons and long non-ASCII subjects are escaped and folded, and read back
    intact."""
    mg("section", "add", "Sales")
    subject = "Réunion chez Agrolait; devis, 20 poteaux — " + "très long sujet " * 8
    mg("case", "new", "--section", "Sales", "--subject", subject, "--date", "2026-12-01T10:00Z")
    data = export(mg, tmp_path)
    assert max(len(line) for line in data.split(b"\r\n")) <= 75  # folded (RFC 5545 3.1)
    expected = f"[1] {' '.join(subject.split())}"
    event = next(iter(icalendar.Calendar.from_ical(data).walk("VEVENT")))
    assert str(event["summary"]) == expected
    assert vobject.readOne(data.decode("utf-8")).vevent.summary.value == expected
    assert "organizer" not in event  # nobody is responsible: no organizer


def test_no_dated_case_is_still_a_calendar(mg: MG, tmp_path: Path) -> None:
    """With no dated case the export is still a valid, empty calendar."""
    mg("section", "add", "Sales")
    data = export(mg, tmp_path)
    assert list(icalendar.Calendar.from_ical(data).walk("VEVENT")) == []
    assert vobject.readOne(data.decode("utf-8")).name == "VCALENDAR"
