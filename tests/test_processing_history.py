"""History in a batch: mail processing writes a batch's history entries together (one
statement for many on PostgreSQL); they must keep the order they were made in, be there
for whatever reads history in the same transaction, and go with a rolled-back message."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from conversation import STAFF, SUPPORT, mail, reply
from processing_helpers import SECRET, support_processor
from sqlalchemy import select

from mailgated.cases import Actor, CaseService, PendingHistory
from mailgated.db import Database
from mailgated.directory import Directory, SectionsAndStaff
from mailgated.intake.spool import Envelope
from mailgated.models import Attachment, Case, History, Section
from mailgated.outbound.recipients import conversation
from mailgated.process import Processor
from mailgated.threading import apply
from mailgated.threading.match import Clues, match


@pytest.fixture
def processor(db: Database, tmp_path: Path) -> Processor:
    staff = [("demo", "Demo User", STAFF["demo"]), ("boss", "Big Boss", STAFF["boss"])]
    return support_processor(db, tmp_path, SUPPORT, staff=staff, max_failures=2)


def spool(processor: Processor, message: EmailMessage) -> None:
    processor.spool.put(message.as_bytes(), Envelope("smtp", str(message["From"]), [SUPPORT]))


def request(n: int) -> EmailMessage:
    return mail(f"p{n}@partner{n}.example", SUPPORT, f"Request {n}", f"Text {n}")


def entries(processor: Processor) -> list[tuple[str, str, str | None]]:
    """Every history entry in History.id order: (case subject, kind, entry subject)."""
    with processor.db.session() as session:
        rows = session.execute(
            select(Case.subject, History.kind, History.subject)
            .join(Case, Case.id == History.case_id)
            .order_by(History.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_failing_message_in_a_batch_leaves_none_of_its_history(
    processor: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message that fails after its case changes were historized leaves no entry; the
    others of the batch keep theirs, in the order they were made."""
    original = apply.ROLES["new"]

    def new_case(step: apply.Handling) -> apply.Outcome:
        outcome = original(step)  # the case, its entries, then the failure
        if step.mail.subject == "Request 2":
            raise RuntimeError("boom")
        return outcome

    monkeypatch.setitem(apply.ROLES, "new", new_case)
    for n in (1, 2, 3):
        spool(processor, request(n))
    assert [r.status for r in processor.run_once()] == ["done", "retry", "done"]
    assert entries(processor) == [
        ("Request 1", "state", None),
        ("Request 1", "email_in", "Request 1"),
        ("Request 3", "state", None),
        ("Request 3", "email_in", "Request 3"),
    ]
    with processor.db.session() as session:
        stray = session.scalars(select(History).where(History.subject == "Request 2")).all()
        assert stray == []


def test_a_reply_in_the_same_batch_joins_its_case_and_entries_keep_their_order(
    processor: Processor,
) -> None:
    """A request, the partner's reply to it and another request with a file, in one batch:
    the reply joins the first case, each entry follows the ones made before it, and the
    file belongs to its message's entry."""
    first = request(1)
    answer = reply(first, str(first["From"]), "More details.")
    second = request(2)
    second.add_attachment(b"%PDF-1.4 tiny", maintype="application", subtype="pdf", filename="a.pdf")
    for message in (first, answer, second):
        spool(processor, message)
    assert [r.status for r in processor.run_once()] == ["done", "done", "done"]
    assert entries(processor) == [
        ("Request 1", "state", None),
        ("Request 1", "email_in", "Request 1"),
        ("Request 1", "email_in", "Re: Request 1"),
        ("Request 2", "state", None),
        ("Request 2", "email_in", "Request 2"),
    ]
    with processor.db.session() as session:
        [file] = session.scalars(select(Attachment)).all()
        entry = session.get(History, file.history_id)
        assert entry is not None and (entry.kind, entry.subject) == ("email_in", "Request 2")
        assert file.filename == "a.pdf"


def support_section(db: Database) -> int:
    """The id of a section Support managed by the boss."""
    with db.session() as session:
        d = Directory(session)
        d.add_user("boss", "Big Boss", STAFF["boss"])
        section, _ = d.add_section("Support", email=SUPPORT, manager="boss")
        session.flush()
        return section.id


def test_a_message_id_historized_earlier_in_the_transaction_matches_its_case(
    db: Database,
) -> None:
    """A Message-ID recorded by an entry not yet written (deferred in this transaction)
    still threads a reply naming it to that case."""
    section_id = support_section(db)
    with db.session() as session:
        pending = PendingHistory.start(session)
        service = CaseService(session, Actor.system())
        case = service.create(session.get_one(Section, section_id), "Printer on fire")
        service.record_message(
            case, direction="out", body="On our way.", message_id="<only-here@mycompany.example>"
        )
        assert pending.rows  # deferred: nothing written yet
        clues = Clues(
            sender="p@partner.example",
            recipients=[SUPPORT],
            message_ids=["<only-here@mycompany.example>"],
            subject="Re: fire",
        )
        found = match(session, clues, SectionsAndStaff(session), SECRET)
        assert found.case is case and found.evidence == "headers"
        assert "(history)" in found.detail


def test_the_conversation_includes_entries_made_earlier_in_the_transaction(
    db: Database,
) -> None:
    """Mail to the partner threads under the case's messages, also those historized in
    this transaction and not yet written."""
    section_id = support_section(db)
    with db.session() as session:
        PendingHistory.start(session)
        service = CaseService(session, Actor.system())
        case = service.create(session.get_one(Section, section_id), "Printer on fire")
        for n in (1, 2):
            service.record_message(
                case, direction="in", body=f"part {n}", message_id=f"<m{n}@partner.example>"
            )
        assert conversation(session, case.id) == ["<m1@partner.example>", "<m2@partner.example>"]


def test_a_batch_of_entries_written_at_once_comes_after_the_deferred_ones(db: Database) -> None:
    """Entries written in bulk (the outbox's loop breaker, a rule's actions) follow those
    made before them and not yet written: History.id order is the order they were made in."""
    section_id = support_section(db)
    with db.session() as session:
        pending = PendingHistory.start(session)
        service = CaseService(session, Actor.system())
        case = service.create(session.get_one(Section, section_id), "Printer on fire")
        service.note(case, "first")
        service.bulk_history([(case.id, "held", "second")])
        service.note(case, "third")
        pending.write(session)
        case_id = case.id
    with db.session() as session:
        bodies = session.scalars(
            select(History.body).where(History.case_id == case_id).order_by(History.id)
        ).all()
    assert bodies == ["created in section Support (draft)", "first", "second", "third"]


def test_a_copy_recorded_meanwhile_by_another_worker_is_a_duplicate_and_the_rest_done(
    processor: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message another worker recorded after this batch looked for duplicates fails the
    batch's write (the raw messages are written together at its end): the batch runs
    again message by message, the copy is set aside as a duplicate and leaves no case or
    history, the others are done."""
    first = request(1)
    spool(processor, first)
    assert [r.status for r in processor.run_once()] == ["done"]
    monkeypatch.setattr(Processor, "_known_duplicates", lambda self, session, ready: None)
    for message in (request(2), first, request(3)):
        spool(processor, message)
    assert [r.status for r in processor.run_once()] == ["done", "duplicate", "done"]
    assert entries(processor) == [
        ("Request 1", "state", None),
        ("Request 1", "email_in", "Request 1"),
        ("Request 2", "state", None),
        ("Request 2", "email_in", "Request 2"),
        ("Request 3", "state", None),
        ("Request 3", "email_in", "Request 3"),
    ]


def test_deferred_entries_written_together_get_the_ids_of_their_own_rows(db: Database) -> None:
    """Entries written in one go (one executemany on SQLite, ids worked out from the
    largest) each get the id of the row holding their own text, after rows already there."""
    section_id = support_section(db)
    with db.session() as session:
        service = CaseService(session, Actor.system())
        case = service.create(session.get_one(Section, section_id), "Printer on fire")
        service.note(case, "written at once")  # rows before: the new ids come after theirs
    with db.session() as session:
        pending = PendingHistory.start(session)
        service = CaseService(session, Actor.system())
        case = session.get_one(Case, case.id)
        entries = [service.note(case, f"note {n}") for n in range(5)]
        assert all(entry.id is None for entry in entries)  # deferred
        pending.write(session)
        ids = {entry.id: entry.body for entry in entries}
    with db.session() as session:
        stored = dict(session.execute(select(History.id, History.body)).tuples().all())
    assert len(ids) == 5 and all(stored[i] == body for i, body in ids.items())
    assert min(ids) > min(stored)
