"""Every mail we compose keeps RFC 5322's 998-octet line limit, so a relay that enforces it
takes our long-paragraph forwards, replies and template mails (issue 12 item 2)."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from conversation import STAFF, SUPPORT, World, case_id_of, mail, serve_module
from smtp_sink import smtp_sink

from mailgated.config import Config, OutboundConfig
from mailgated.db import Database
from mailgated.models import Outbox
from mailgated.outbound import outbox
from mailgated.outbound.compose import Attached, Composer, MailCase
from mailgated.outbound.sender import Sender

SECRET = b"0123456789abcdef0123456789abcdef"
TEMPLATES = Path(__file__).parent.parent.parent / "mailgated" / "templates"
LONG = {
    "ascii": "x" * 5000,
    "words": ("All work and no play. " * 230)[:5000],
    "utf8": "Grüße aus Köln, " + "ü" * 4984,
}
HOSTILE_ID = f"<{'x' * 1500}@partner.example>"  # no header line could hold it
ORIGINAL = b"From: a@partner.example\nSubject: the original\n\n"
PARAGRAPH = (
    "We ordered forty units of the model 7 printer in October and only thirty-two arrived; " * 20
).strip()  # ~1,700 characters on one line, as Gmail and Outlook send a paragraph


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


async def test_every_template_with_5000_character_lines_reaches_a_strict_relay(
    db: Database,
) -> None:
    """Each template, with 5,000-character subject and text lines, passes a relay that
    refuses lines over 998 octets, and reads back exactly."""
    kinds = sorted(p.stem for p in TEMPLATES.glob("*.txt"))
    assert len(kinds) >= 7
    with smtp_sink() as (sink, port):
        cfg = OutboundConfig(relay=f"127.0.0.1:{port}", timeout=5, site_id="site-1")
        composer = Composer(Config(outbound=cfg), SECRET)
        sent: dict[str, tuple[str, str]] = {}
        with db.session() as s:
            for shape, text in LONG.items():
                case = MailCase(101, text, "open", 3, "Support", SUPPORT, partner=text)
                for kind in kinds:
                    context = {
                        "text": f"First line.\n{text}\nLast line.",
                        "author": text[:200],
                        "failed": [text],
                        "done": [text],
                        "who": "responsible",
                        "rule": text,
                        "address": "p@partner.example",
                        "attachments": [text[:300]],
                    }
                    files = [
                        Attached("notes.txt", "text/plain", text.encode()),
                        Attached("original", "message/rfc822", ORIGINAL + text.encode()),
                    ]
                    message = composer.compose(
                        kind,
                        case,
                        ["p@partner.example"],
                        context,
                        attachments=files,
                        in_reply_to=HOSTILE_ID,
                        references=[HOSTILE_ID, "<ok@partner.example>"],
                    )
                    item = outbox.Outgoing(message, ["p@partner.example"], kind=kind)
                    outbox.enqueue(s, [item], cfg, automatic=False)
                    sent[str(message["Message-ID"])] = (shape, kind)
        async with Sender(db, cfg) as sender:
            while await sender.run_once():
                pass
        assert sink.too_long == 0
        assert len(sink.messages) == len(sent) == 3 * len(kinds)
        for received in sink.messages:
            shape, kind = sent[received.message_id]
            message = received.message
            assert str(message["Subject"]) == f"[101] {' '.join(LONG[shape].split())}", kind
            assert str(message["References"]) == "<ok@partner.example>"  # the 1,500 one left out
            if kind in ("copy", "forward", "relay"):
                assert LONG[shape] in body_of(message).splitlines(), (shape, kind)
            files = [p for p in message.iter_attachments() if p.get_filename() == "notes.txt"]
            assert files[0].get_content() == LONG[shape]
            # a message/rfc822 part must not be encoded: one with a long line goes as a file
            (original,) = [p for p in message.iter_attachments() if p is not files[0]]
            assert original.get_filename() == "original.eml"
            assert original.get_content().endswith(LONG[shape].encode())
    with db.session() as s:
        assert {r.state for r in s.query(Outbox)} == {"sent"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    yield from serve_module(request, tmp_path_factory, "long-lines")


def test_forward_of_a_quoted_printable_paragraph_is_delivered(world: World) -> None:
    """A partner's quoted-printable mail with a 1,700-character paragraph is forwarded to
    the manager and acknowledged, each in one piece, through a relay that enforces 998."""
    partner = "long.paragraph@partner.example"
    message = mail(partner, SUPPORT, "Missing printers")
    message.set_content(PARAGRAPH + "\n\nRegards, Pat\n", cte="quoted-printable")
    assert max(len(line) for line in message.as_bytes().splitlines()) < 100
    world.send(message)
    ack = world.wait_for(partner)[0]
    case_id = case_id_of(ack)
    forward = world.wait_for(STAFF["boss"], where=lambda m: f"[{case_id}]" in str(m["Subject"]))[0]
    assert PARAGRAPH in body_of(forward).splitlines()
    assert world.sink is not None and world.sink.too_long == 0
    world.settle()  # the relay has it; the sender may not have recorded it yet
    assert {r["state"] for r in world.outbox() if r["case_id"] == case_id} == {"sent"}


def test_case_reply_with_a_long_paragraph_is_delivered(world: World) -> None:
    """`case reply ID "<1,700-character paragraph>"` reaches the partner, paragraph whole."""
    partner = "long.reply@partner.example"
    world.send(mail(partner, SUPPORT, "Question about delivery"))
    case_id = case_id_of(world.wait_for(partner)[0])
    world.mg("case", "reply", str(case_id), PARAGRAPH, as_user="demo")
    answer = world.wait_for(partner, 2)[1]
    assert PARAGRAPH in body_of(answer).splitlines()
    assert world.sink is not None and world.sink.too_long == 0
    world.settle()  # the relay has it; the sender may not have recorded it yet
    assert {r["state"] for r in world.outbox() if r["case_id"] == case_id} == {"sent"}
