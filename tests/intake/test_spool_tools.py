"""Spool recovery tools against a running daemon: `spool retry ID… [--section]`, `--all`,
`spool delete ID…` — what an operator does with quarantined mail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import SUPPORT, World, mail, serve_module

from mailgated.intake.spool import Envelope, Spool

WAIT = 30.0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    yield from serve_module(request, tmp_path_factory, "spooltools")


def deliver(world: World, sender: str, subject: str, section: str) -> str:
    """What `mailgated deliver --section SECTION` spools (deliver never checks the section)."""
    raw = mail(sender, SUPPORT, subject).as_bytes()
    envelope = Envelope(source="deliver", envelope_from=sender, section=section)
    return Spool(world.tmp / "spool").put(raw, envelope)


def quarantined(world: World, *ids: str) -> list[dict[str, Any]]:
    """The quarantine once all of `ids` are in it (the daemon quarantines an unknown section)."""
    deadline = time.monotonic() + WAIT
    while True:
        rows: list[dict[str, Any]] = world.mg("spool", "list", "--quarantined", "--json").json()
        if {r["id"] for r in rows} >= set(ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def cases_from(world: World, sender: str) -> list[dict[str, Any]]:
    world.settle()
    return [c for c in world.cases() if c["email_from"] == sender]


def test_retry_with_a_section_reroutes_a_mistyped_deliver(world: World) -> None:
    """A `deliver --section Suport` typo is quarantined; `spool retry ID --section Support`
    makes it a case in Support; an unknown --section is refused with one line."""
    spool_id = deliver(world, "typo@tools1.example", "Mistyped section", "Suport")
    [row] = [r for r in quarantined(world, spool_id) if r["id"] == spool_id]
    assert "Suport" in row["reason"]

    wrong = world.mg("spool", "retry", spool_id, "--section", "Nope", ok=False)
    assert wrong.code == 1
    assert wrong.err.strip() == (
        "mailgated: error: no section named 'Nope' (see `mailgated section list`)"
    )

    done = world.mg("spool", "retry", spool_id, "--section", "Support")
    assert done.out.strip() == f"{spool_id}: back in the spool for section 'Support'"
    world.wait_for("typo@tools1.example")  # the acknowledgement
    [case] = cases_from(world, "typo@tools1.example")
    assert (case["section"], case["subject"]) == ("Support", "Mistyped section")
    assert spool_id not in {r["id"] for r in quarantined(world)}


def test_retry_several_ids_and_all(world: World) -> None:
    """Several IDs at once, then --all, each with a new section; a bad ID is said, the
    others still go, and the exit is 1."""
    first = deliver(world, "one@tools2.example", "First", "Nowhere")
    second = deliver(world, "two@tools2.example", "Second", "Nowhere")
    quarantined(world, first, second)
    several = world.mg("spool", "retry", first, "nope", second, "--section", "Support", ok=False)
    assert several.code == 1
    assert "nope: no spooled message 'nope'" in several.err
    assert f"{second}: back in the spool" in several.out
    assert len(cases_from(world, "one@tools2.example")) == 1
    assert len(cases_from(world, "two@tools2.example")) == 1

    third = deliver(world, "three@tools2.example", "Third", "Nowhere")
    fourth = deliver(world, "four@tools2.example", "Fourth", "Nowhere")
    quarantined(world, third, fourth)
    assert world.mg("spool", "retry", "--all", "--section", "Support").code == 0
    assert len(cases_from(world, "three@tools2.example")) == 1
    assert len(cases_from(world, "four@tools2.example")) == 1
    assert world.mg("spool", "retry", "--all").out.strip() == "nothing is quarantined"
    assert world.mg("spool", "retry", ok=False).code == 2


def test_delete_asks_and_removes(world: World) -> None:
    """`spool delete` asks first (no: nothing happens); `--yes` deletes without asking."""
    gone = deliver(world, "spam@tools3.example", "Junk", "Nowhere")
    quarantined(world, gone)
    kept = world.mg("spool", "delete", gone, ok=False, stdin=b"n\n")
    assert kept.code == 1
    assert "delete 1 spooled message(s) for good?" in kept.out
    assert gone in {r["id"] for r in quarantined(world)}
    assert world.mg("spool", "delete", gone, stdin=b"y\n").code == 0
    assert gone not in {r["id"] for r in quarantined(world)}

    again = deliver(world, "spam@tools3.example", "Junk 2", "Nowhere")
    quarantined(world, again)
    assert world.mg("spool", "delete", "--yes", again).out.strip() == f"{again}: deleted"
    assert world.mg("spool", "delete", "--yes", again, ok=False).code == 1
    assert cases_from(world, "spam@tools3.example") == []
    assert not (Path(world.tmp) / "spool" / "quarantine" / again).exists()
