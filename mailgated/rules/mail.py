"""Mail sent by rules: reminders and templated mails, built from plain strings.

The one place that turns a rule's mail into an EmailMessage, so it can move to
the shared composer (outbound/compose.py) in one edit. Every mail is from the
case's section address, tagged "[ID] subject" for threading, and marked
`Auto-Submitted: auto-generated` (RFC 3834) so that auto-responders stay
silent; the outbox applies the bounce and rate limits of all automatic mail.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any

import jinja2

from mailgated.config import OutboundConfig

TEMPLATE_REMINDER = "rule_reminder.txt"


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
) -> EmailMessage:
    """A rule's mail from plain strings."""
    message = EmailMessage()
    message["From"] = formataddr((one_line(section_name), one_line(section_address)))
    message["To"] = ", ".join(one_line(a) for a in to)
    message["Subject"] = f"[{case_id}] {one_line(subject)}"
    message["Message-ID"] = make_msgid(domain=section_address.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Mailgated-Rule"] = one_line(rule_name)
    message.set_content(body)
    return message


def render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    return env.get_template(name).render(**context)
