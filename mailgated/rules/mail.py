"""Mail sent by rules: reminders and templated mails, built from plain strings.

The one place that turns a rule's mail into an EmailMessage, so it can move to
the shared composer (outbound/compose.py) in one edit. Every mail is from the
case's section address, tagged "[ID] subject" for threading, and marked
`Auto-Submitted: auto-generated` (RFC 3834) so that auto-responders stay
silent; the outbox applies the bounce and rate limits of all automatic mail.

A sweep may send a thousand reminders in one transaction, so messages are
built with the `compat32` policy: headers are stored as the strings given
(after `one_line`, so no header injection) and encoded (RFC 2047/2231) only
when the message is flattened. The default policy parses every header it is
given and costs three times as much per message.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any

import jinja2

# the template environment and the MIME parts are the Composer's (shared by all our mail)
from mailgated.outbound.compose import (
    POLICY,
    Attached,
    environment,
    fill,
    one_line,
    template_problem,
)

__all__ = ["Attached", "build", "environment", "one_line", "render", "template_problem"]

TEMPLATE_REMINDER = "rule_reminder.txt"


def build(
    *,
    section_name: str,
    section_address: str,
    to: list[str],
    case_id: int,
    subject: str,
    body: str,
    rule_name: str,
    attachments: list[Attached] | None = None,
) -> EmailMessage:
    """A rule's mail from plain strings; with attachments it is multipart/mixed."""
    message = EmailMessage(policy=POLICY)
    message["From"] = formataddr((one_line(section_name), one_line(section_address)), "utf-8")
    message["To"] = ", ".join(one_line(a) for a in to)
    message["Subject"] = f"[{case_id}] {one_line(subject)}"
    message["Message-ID"] = make_msgid(domain=section_address.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Mailgated-Rule"] = one_line(rule_name)
    fill(message, body, attachments or [])
    return message


def render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    return env.get_template(name).render(**context)
