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

import email.policy
from dataclasses import dataclass
from email import encoders
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any

import jinja2

from mailgated.config import OutboundConfig

TEMPLATE_REMINDER = "rule_reminder.txt"


@dataclass(frozen=True)
class Attached:
    """A file to attach: the case's conversation as text, or one of the case's files."""

    filename: str
    content_type: str
    data: bytes


def environment(config: OutboundConfig) -> jinja2.Environment:
    """Templates from `outbound.templates_dir` first, then the ones shipped in the package."""
    loaders: list[jinja2.BaseLoader] = []
    if config.templates_dir:
        loaders.append(jinja2.FileSystemLoader(config.templates_dir))
    loaders.append(jinja2.PackageLoader("mailgated", "templates"))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders), autoescape=False, keep_trailing_newline=True
    )


def template_problem(env: jinja2.Environment, name: str) -> str | None:
    """Why the template cannot be used, or None (checked when rules are loaded)."""
    try:
        env.get_template(name)
    except jinja2.TemplateNotFound:
        return f"no template named '{name}'"
    except jinja2.TemplateSyntaxError as exc:
        return f"template '{name}' line {exc.lineno}: {exc.message}"
    return None


def one_line(text: str) -> str:
    """Header text with CR/LF and runs of space folded (no header injection)."""
    return " ".join(str(text).split())


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
    message = EmailMessage(policy=email.policy.compat32)
    message["From"] = formataddr((one_line(section_name), one_line(section_address)), "utf-8")
    message["To"] = ", ".join(one_line(a) for a in to)
    message["Subject"] = f"[{case_id}] {one_line(subject)}"
    message["Message-ID"] = make_msgid(domain=section_address.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Mailgated-Rule"] = one_line(rule_name)
    if not attachments:
        message.set_payload(body, _charset(body))  # text/plain, 7bit or base64 UTF-8
        return message
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = "multipart/mixed"
    message.set_payload([])
    message.attach(_text_part(body, "plain"))
    for item in attachments:
        message.attach(_part(item))
    return message


def _charset(text: str) -> str:
    return "us-ascii" if text.isascii() else "utf-8"


def _text_part(text: str, subtype: str) -> EmailMessage:
    part = EmailMessage(policy=email.policy.compat32)
    part.set_payload(text, _charset(text))
    if subtype != "plain":
        part.set_type(f"text/{subtype}")
    return part


def _part(item: Attached) -> EmailMessage:
    """One attachment: text as text (in its own charset), anything else in base64."""
    content_type = one_line(item.content_type).lower()
    main, _, sub = content_type.partition("/")
    if not (main and sub) or " " in content_type:
        main, sub = "application", "octet-stream"
    if main == "text":
        part = _text_part(item.data.decode("utf-8", "replace"), sub)
    else:
        part = EmailMessage(policy=email.policy.compat32)
        part["Content-Type"] = f"{main}/{sub}"
        part.set_payload(item.data)
        encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=one_line(item.filename))
    return part


def render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    return env.get_template(name).render(**context)
