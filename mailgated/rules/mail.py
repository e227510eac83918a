"""Mail sent by rules: reminders and templated mails, through the shared Composer.

Every rule mail gets the headers of all our mail (`outbound/compose.py`): From
the case's section, Reply-To with a signed reply token (for the responsible,
so their answer is verified as staff), a signed Message-ID, "[ID] subject",
X-Priority, the loop header, plus `Auto-Submitted: auto-generated` (RFC 3834)
so auto-responders stay silent, and `X-Mailgated-Rule` naming the rule. The
outbox applies the bounce and rate limits of all automatic mail.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

# the template environment and the MIME parts are the Composer's (shared by all our mail)
from mailgated.outbound.compose import (
    Attached,
    Composer,
    MailCase,
    environment,
    fill,
    one_line,
    template_problem,
)

__all__ = ["Attached", "MailCase", "build", "environment", "template_problem"]

TEMPLATE_REMINDER = "rule_reminder.txt"


def build(
    composer: Composer,
    *,
    case: MailCase,
    to: Sequence[str],
    template: str,
    context: dict[str, Any],
    rule_name: str,
    subject: str | None = None,
    token_user: int | None = None,
    token_generation: int = 0,
    attachments: Sequence[Attached] = (),
) -> EmailMessage:
    """A rule's mail: `template` rendered with `context`, under the Composer's headers."""
    body = composer.render(template, context)
    message = composer.headers(
        case,
        to,
        subject=subject if subject is not None else case.subject,
        token_user=token_user,
        token_generation=token_generation,
    )
    message["Auto-Submitted"] = "auto-generated"
    message["X-Mailgated-Rule"] = one_line(rule_name)
    fill(message, body, attachments)
    return message
