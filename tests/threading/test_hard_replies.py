"""What real clients send besides ordinary replies, end to end through `mailgated run`.

Every message of the corpus in tests/data/replies/ is written the way one client or
mail system writes it (Outlook/Exchange, Gmail, Thunderbird, Apple Mail, Zimbra, Yahoo,
Yandex, Proton, Mailman, Google Groups …, in several languages). Each answers a case
that the staff has already answered and closed; the test checks what a user notices:
the history entry and its text, the state after, who got mail, and the author.

The messages are templates: ``{{PARTNER}}`` (the case's partner), ``{{SUBJECT}}``
(the tagged subject of our relay), ``{{RELAY_ID}}`` (the Message-ID of our relay, which
the client answers), ``{{CASE}}`` (the case ID) are filled in per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conversation import STAFF, SUPPORT, World, case_id_of, mail, serve_module
from sqlalchemy import select

from mailgated.models import Attachment

CORPUS = Path(__file__).parent.parent / "data" / "replies"
BOSS = STAFF["boss"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    yield from serve_module(request, tmp_path_factory, "replies")


@dataclass(frozen=True)
class Closed:
    """A case the staff answered and closed: what the partner's client answers."""

    case_id: int
    partner: str
    subject: str
    relay_id: str


def closed_case(world: World, partner: str, subject: str) -> Closed:
    """Partner writes, the manager answers, the case is closed."""
    world.send(mail(f"Sylvie Lelitre <{partner}>", SUPPORT, subject, "The pump leaks again."))
    ack = world.wait_for(partner)[0]
    case_id = case_id_of(ack)
    fwd = world.wait_for(BOSS, where=lambda m: f"[{case_id}]" in str(m["Subject"]))[0]
    answer = mail(BOSS, str(fwd["Reply-To"]), f"Re: {fwd['Subject']}", "Replace seal S-12.")
    answer["In-Reply-To"] = fwd["Message-ID"]
    world.send(answer, rcpt=[a.addr_spec for a in answer["To"].addresses])
    relay = world.wait_for(partner, 2)[1]
    world.settle()
    assert world.case(case_id)["state"] == "closed"
    return Closed(case_id, partner, str(relay["Subject"]), str(relay["Message-ID"]))


def feed(world: World, name: str, closed: Closed, sender: str | None = None) -> None:
    """One corpus message, filled in for this case, into the SMTP listener."""
    text = (CORPUS / name).read_bytes()
    for key, value in {
        "PARTNER": closed.partner,
        "SUBJECT": closed.subject,
        "RELAY_ID": closed.relay_id,
        "CASE": str(closed.case_id),
    }.items():
        text = text.replace(b"{{" + key.encode() + b"}}", value.encode())
    world.send(text, rcpt=[SUPPORT], sender=closed.partner if sender is None else sender)
    world.settle()


@dataclass(frozen=True)
class Expect:
    """What a staff member reading the case sees after one message of the corpus."""

    name: str
    kind: str  # the new history entry: "automatic" (recorded only) or "email_in"
    state: str  # the case's state after (it was closed)
    contains: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()

    @property
    def forwarded(self) -> bool:
        return self.kind == "email_in"


AUTOMATIC = [
    # read receipts (issue 16.1)
    Expect("mdn_thunderbird.eml", "automatic", "closed", ("receipt", "displayed")),
    Expect("mdn_exchange_lu_fr.eml", "automatic", "closed", ("receipt",)),
    Expect("receipt_outlook_gelesen.eml", "automatic", "closed", ("receipt", "Gelesen")),
    Expect("receipt_outlook_nicht_gelesen.eml", "automatic", "closed", ("receipt",)),
    # out of office (issue 16.2), without RFC 3834 headers
    Expect("ooo_exchange_de.eml", "automatic", "closed", ("Automatische Antwort",)),
    Expect("ooo_subject_fr.eml", "automatic", "closed", ("Réponse automatique",)),
    Expect("ooo_subject_ru.eml", "automatic", "closed", ("Автоответ",)),
    Expect("ooo_body_pt.eml", "automatic", "closed", ("fora do escritório",)),
    Expect("ooo_inbox_rule.eml", "automatic", "closed", ("X-MS-Exchange-Inbox-Rules-Loop",)),
    # calendar answers without a typed word (issue 16.3)
    Expect("calendar_outlook_angenommen.eml", "automatic", "closed", ("calendar", "accepted")),
    Expect("calendar_google_accepted.eml", "automatic", "closed", ("calendar", "accepted")),
]

REPLIES = [
    Expect(
        "calendar_outlook_comment.eml",
        "email_in",
        "open",
        ("15 minutes late",),
        ("BEGIN:VCALENDAR",),
    ),
    # signed and packaged mail (issue 16.5): the person's text, never the package
    Expect(
        "smime_opaque_signed_outlook.eml",
        "email_in",
        "open",
        ("die Pumpe P-7 läuft wieder", "Jürgen Vogt"),
        ("MII", "Ursprüngliche Nachricht", "Replace seal"),
    ),
    Expect(
        "tnef_outlook_winmail.eml",
        "email_in",
        "open",
        ("anbei das Prüfprotokoll der Pumpe P-7", "der Druck hält seit gestern"),
        ("rtf1", "\\par", "eJ8+"),
    ),
    Expect(
        "tnef_outlook_with_text.eml",
        "email_in",
        "open",
        ("anbei das Prüfprotokoll der Pumpe P-7",),
        ("rtf1", "eJ8+", "Grüßen\nJürgen Vogt\n\nGuten Tag"),  # the words once, not twice
    ),
    Expect(
        "pgp_inline_signed_k9.eml",
        "email_in",
        "open",
        ("Pressure holds at 6 bar",),
        ("BEGIN PGP", "Hash: SHA256", "END PGP", "Replace seal", "Sylvie Lelitre, Agrolait"),
    ),
    Expect(
        "pgp_mime_encrypted_thunderbird.eml",
        "email_in",
        "open",
        ("encrypted message (PGP)", "case mail"),
        ("BEGIN PGP", "hQEMA"),
    ),
    Expect(
        "pgp_inline_encrypted.eml",
        "email_in",
        "open",
        ("encrypted message (PGP)",),
        ("BEGIN PGP", "hQIMA"),
    ),
    Expect(
        "smime_encrypted_thunderbird.eml",
        "email_in",
        "open",
        ("encrypted message (S/MIME)",),
        ("MIIB",),
    ),
]


QUOTES = [
    # quote and signature trimming (issue 16.6): the person's words, once
    Expect(
        "quote_bottom_post_thunderbird.eml",
        "email_in",
        "open",
        ("out of stock at our distributor",),
        ("Replace seal", "Big Boss", "wrote:", "Sylvie Lelitre\nAgrolait"),
    ),
    Expect(
        "quote_interleaved_mutt.eml",
        "email_in",
        "open",
        (
            "> Which serial number does the pump have?\n\n4711-B, on the plate next to the"
            " motor.\n\n> And when was the seal last replaced?\n\nIn March, by your"
            " technician Mr. Weber.",
        ),
        ("\nSylvie",),
    ),
    Expect(
        "quote_yahoo_indented.eml",
        "email_in",
        "open",
        ("Tuesday at 10:00 suits us",),
        ("Replace seal", "wrote:", "Big Boss"),
    ),
    Expect(
        "quote_zimbra_de.eml",
        "email_in",
        "open",
        ("die Pumpe läuft seit Mittag", "Viele Grüße"),
        ("Ursprüngliche Mail", "Replace seal", "Gesendet:"),
    ),
    Expect(
        "quote_yandex_forward_ru.eml",
        "email_in",
        "open",
        ("уплотнение S-12 у дистрибьютора закончилось",),
        ("Пересылаемое сообщение", "Replace seal", "Big Boss", "Конец"),
    ),
    Expect(
        "quote_iphone_de.eml",
        "email_in",
        "open",
        ("Passt, danke! Ich baue sie morgen früh ein.",),
        ("iPhone", "Replace seal", "schrieb"),
    ),
    Expect(
        "quote_iphone_ru.eml",
        "email_in",
        "open",
        ("Спасибо, уплотнение получили.",),
        ("iPhone", "Replace seal", "написал"),
    ),
    Expect(
        "quote_proton.eml",
        "email_in",
        "open",
        ("the new seal holds",),
        ("Proton Mail", "Replace seal", "wrote"),
    ),
    Expect(
        "quote_disclaimer_after_quote.eml",
        "email_in",
        "open",
        ("bitte rufen Sie mich an",),
        ("vertrauliche", "Replace seal", "schrieb", "____"),
    ),
    Expect(
        "quote_outlook_web_html_only.eml",
        "email_in",
        "open",
        ("Danke, die Dichtung ist bestellt.",),
        ("* * *", "Von:", "Replace seal", "Gesendet"),
    ),
    Expect(
        "quote_gmail_pt.eml",
        "email_in",
        "open",
        ("A peça chegou hoje, obrigada.",),
        ("escreveu", "Replace seal"),
    ),
]


def last_message(case: dict[str, Any]) -> dict[str, str]:
    """The case's newest history entry that records a message (not a state change)."""
    entry: dict[str, str] = [h for h in case["history"] if h["kind"] != "state"][-1]
    return entry


@pytest.mark.parametrize("expect", AUTOMATIC + REPLIES + QUOTES, ids=lambda e: e.name)
def test_corpus_message_on_a_closed_case(world: World, expect: Expect) -> None:
    """Automatic mail is recorded without reopening or answering; a reply reopens."""
    stem = expect.name.removesuffix(".eml").replace("_", "-")
    closed = closed_case(world, f"sylvie@{stem}.example", "Pump P-7 leaking")
    before_partner, before_boss = len(world.received(closed.partner)), len(world.received(BOSS))

    feed(world, expect.name, closed)

    case = world.case(closed.case_id)
    entry = last_message(case)
    assert (entry["kind"], case["state"]) == (expect.kind, expect.state), entry
    for text in expect.contains:
        assert text in entry["body"], (text, entry["body"])
    for text in expect.absent:
        assert text not in entry["body"], (text, entry["body"])
    assert len(world.received(closed.partner)) == before_partner  # never answered
    forwards = [
        m
        for m in world.received(BOSS)[before_boss:]
        if f"[{closed.case_id}]" in str(m.message["Subject"])
    ]
    assert len(forwards) == (1 if expect.forwarded else 0)
    if expect.forwarded:
        body = forwards[0].message.get_body(("plain",))
        assert body is not None
        assert expect.contains[0] in body.get_content().replace("\r\n", "\n")


LISTS = [
    Expect(
        "list_mailman3_reply.eml",
        "email_in",
        "open",
        ("shaft is 2 mm thicker",),
        ("Replace seal", "unsubscribe", "Partners mailing list", "bulk", "Precedence"),
    ),
    Expect(
        "list_mailman21_wrapped.eml",
        "email_in",
        "open",
        ("arrived broken",),
        ("Replace seal", "listinfo", "Partners mailing list", "bulk", "Precedence"),
    ),
]


@pytest.mark.parametrize("expect", LISTS, ids=lambda e: e.name)
def test_list_reply_is_the_authors_reply(world: World, expect: Expect) -> None:
    """A reply through a mailing list counts as its author's: reopens, forwarded, the
    author recorded (not the list), the list's footer and the quote trimmed."""
    stem = expect.name.removesuffix(".eml").replace("_", "-")
    closed = closed_case(world, f"sylvie@{stem}.example", "Pump P-7 leaking")
    before_boss = len(world.received(BOSS))

    feed(world, expect.name, closed, sender="partners-bounces@lists.agrolait.example")

    case = world.case(closed.case_id)
    entry = last_message(case)
    assert (entry["kind"], case["state"]) == (expect.kind, expect.state), entry
    assert closed.partner in entry["author"]
    assert "partners@lists" not in entry["author"]
    for text in expect.contains:
        assert text in entry["body"]
    for text in expect.absent:
        assert text not in entry["body"], (text, entry["body"])
    forward = world.wait_for(BOSS, before_boss + 1)[-1]
    assert expect.contains[0] in forward.get_body(("plain",)).get_content()
    assert not world.received("partners@lists.agrolait.example")


def test_new_thread_from_a_google_group_is_the_authors_case_and_not_acknowledged(
    world: World,
) -> None:
    """A group's new thread: a case of the author (not the group), no acknowledgement
    to the author nor to the group, the group's footer trimmed."""
    partner = "pat@google-groups-new.example"
    closed = Closed(0, partner, "", "")
    feed(world, "list_google_groups_new.eml", closed, sender="partners+bncBC@googlegroups.example")

    case = next(c for c in world.cases() if "Conveyor belt C-3" in c["subject"])
    shown = world.case(case["id"])
    assert shown["email_from"] == partner
    body = last_message(shown)["body"]
    assert "squeaks at full speed" in body
    assert "Google Groups" not in body and "unsubscribe" not in body
    assert world.received(partner) == []
    assert world.received("partners@googlegroups.example") == []
    world.wait_for(BOSS, where=lambda m: "Conveyor belt C-3" in str(m["Subject"]))


def test_inbox_rule_reply_naming_no_case_opens_nothing(world: World) -> None:
    """An Exchange inbox-rule answer to mail that names no case: no case, no answer."""
    partner = "sylvie@inbox-rule-new.example"
    before = len(world.cases())
    feed(world, "ooo_inbox_rule_new.eml", Closed(0, partner, "", ""))
    assert len(world.cases()) == before
    assert world.received(partner) == []


def test_exchange_suppress_header_gets_no_acknowledgement(world: World) -> None:
    """X-Auto-Response-Suppress: All on a person's mail: a case, but no acknowledgement."""
    partner = "ida@suppress.example"
    world.send(
        mail(
            f"Ida Hansen <{partner}>",
            SUPPORT,
            "Invoice 2026-117 is wrong",
            "The VAT rate on line 3 should be 7%.",
            headers={"X-Auto-Response-Suppress": "All"},
        )
    )
    world.settle()
    case = next(c for c in world.cases() if c["subject"] == "Invoice 2026-117 is wrong")
    assert world.case(case["id"])["state"] == "draft"
    world.wait_for(BOSS, where=lambda m: "Invoice 2026-117" in str(m["Subject"]))
    assert world.received(partner) == []


def test_outlook_winmail_dat_files_reach_the_case_and_the_staff(world: World) -> None:
    """The files inside a TNEF winmail.dat are the case's attachments and are forwarded."""
    closed = closed_case(world, "juergen@tnef-files.example", "Pump P-7 leaking")
    before_boss = len(world.received(BOSS))
    feed(world, "tnef_outlook_winmail.eml", closed)
    forward = world.wait_for(BOSS, before_boss + 1)[-1]
    names = [p.get_filename() for p in forward.iter_attachments()]
    assert names == ["Prüfprotokoll P-7.pdf"]
    with world.db.session() as session:
        query = select(Attachment.filename).where(Attachment.case_id == closed.case_id)
        files = list(session.scalars(query))
    assert files == ["Prüfprotokoll P-7.pdf"]
