"""What we send, byte for byte: one golden .eml per outbound template, so a change in our
mail shows in review as a diff of these files.

The messages are rendered with fixed inputs (case, secret, site id, Date, Message-ID,
MIME boundary). After a deliberate change to a template or to the Composer, write the
files anew and review the diff:

    MAILGATED_GOLDEN=update .venv/bin/pytest tests/outbound/test_golden.py
"""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailgated.config import Config, OutboundConfig
from mailgated.outbound.compose import Attached, Composer, MailCase
from mailgated.rules import mail as rule_mail

GOLDEN = Path(__file__).parent.parent / "golden"
SECRET = b"golden-secret-0123456789abcdef"
DATE = "Sun, 06 Dec 2026 09:30:00 +0000"
CASE = MailCase(
    id=101,
    subject="Lieferung fehlt / order 77",
    state="open",
    priority=2,
    section="Support",
    section_email="support@example.com",
    partner="Agrolait",
    email_from="jurgen@agrolait.example",
    user="demo",
)
PARTNER = "jurgen@agrolait.example"
STAFF = "demo@example.com"
TEXT = "Hello,\n\nthe boxes of order 77 have not arrived.\n\nJurgen"
# non-ASCII where it matters (encoded words, base64 text): acknowledgement and forward
NAME = "Jürgen Müller"
FILE = Attached("lieferschein.txt", "text/plain", b"order 77: 3 boxes\n")


def composer() -> Composer:
    outbound = OutboundConfig(site_id="golden-site", domain="example.com")
    return Composer(Config(outbound=outbound), SECRET)


def staff(kind: str, context: dict[str, object], **kw: Any) -> EmailMessage:
    """A mail to the responsible staff member (user 7), with their reply token."""
    return composer().compose(kind, CASE, [STAFF], context, token_user=7, **kw)


def partner(kind: str, context: dict[str, object], **kw: Any) -> EmailMessage:
    return composer().compose(kind, CASE, [PARTNER], context, **kw)


MESSAGES = {
    "acknowledgement": lambda: partner("acknowledgement", {"author": NAME}, automatic=True),
    "command_error": lambda: staff(
        "command_error",
        {"failed": ["#assign nobody: no user 'nobody'"], "done": ["#pending"]},
        automatic=True,
    ),
    "copy": lambda: composer().compose(
        "copy",
        CASE,
        ["watcher@agrolait.example"],
        {"text": TEXT, "author": "Jurgen", "direction": "in", "attachments": []},
        in_reply_to="<order77@agrolait.example>",
    ),
    "forward": lambda: staff(
        "forward",
        {
            "text": TEXT,
            "author": NAME,
            "author_address": PARTNER,
            "role": "new",
            "attachments": [FILE.filename],
            "mentioned": None,
        },
        attachments=[FILE],
        in_reply_to="<order77@agrolait.example>",
        on_behalf=NAME,
    ),
    "relay": lambda: partner(
        "relay",
        {"text": "Hello Jurgen,\n\nthe boxes leave today.", "author": "Demo User"},
        in_reply_to="<order77@agrolait.example>",
        references=["<first@agrolait.example>"],
    ),
    "rule_reminder": lambda: rule_mail.build(
        composer(),
        case=CASE,
        to=[STAFF],
        template=rule_mail.TEMPLATE_REMINDER,
        context={"case": CASE, "who": "responsible", "rule": "Open for 3 days", "attached": []},
        rule_name="Open for 3 days",
        token_user=7,
    ),
    "unverified": lambda: staff("unverified", {"address": STAFF}, automatic=True),
}


def fixed(message: EmailMessage) -> bytes:
    """The message with what changes on every run (Date, random Message-ID nonce, MIME
    boundary) set to fixed values."""
    message.replace_header("Date", DATE)
    message.replace_header("Message-ID", "<golden@example.com>")
    if message.is_multipart():
        message.set_boundary("==golden-boundary==")
    return message.as_bytes()


def test_every_template_has_a_golden_message() -> None:
    """A new template needs its golden .eml (and a removed one leaves none behind)."""
    templates = Path(__file__).parent.parent.parent / "mailgated" / "templates"
    kinds = {p.stem for p in templates.glob("*.txt")}
    assert set(MESSAGES) == kinds
    assert {p.stem for p in GOLDEN.glob("*.eml")} == kinds


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_outbound_mail_matches_its_golden_eml(kind: str) -> None:
    """Each template, rendered with fixed inputs, is byte for byte its golden .eml."""
    rendered = fixed(MESSAGES[kind]())
    path = GOLDEN / f"{kind}.eml"
    if os.environ.get("MAILGATED_GOLDEN") == "update":
        path.write_bytes(rendered)
    assert rendered == path.read_bytes(), f"{path.name} differs: see the module docstring"
