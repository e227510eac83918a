"""Route: which section a message is for.

In order: the section fixed by the intake (`mailgated deliver --section`, an
`import --section`, a `[[mailbox]]`'s section, or the SMTP listener when every
recipient was one section's address); then the first section address among the
envelope recipients, then among To and Cc (plus-addressing allowed:
`support+token@` is support@); then `[processing] default_section`. A message
for no section — or for a section name that does not exist — cannot be
processed and is quarantined with that reason (`RouteError`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgated.directory import SectionsAndStaff
from mailgated.intake.spool import Envelope
from mailgated.message.parse import ParsedMail
from mailgated.models import Section


class RouteError(Exception):
    """No section for this message; str(exc) is the quarantine reason."""


@dataclass(frozen=True)
class Route:
    section: Section
    why: str  # for the log line: "envelope section", "recipient support@…", "default section"


def route(
    mail: ParsedMail, envelope: Envelope, lookup: SectionsAndStaff, default_section: str
) -> Route:
    if envelope.section:
        section = lookup.sections_by_name.get(envelope.section)
        if section is None:
            raise RouteError(f"unknown section '{envelope.section}' (given at intake)")
        return Route(section, "intake section")
    candidates = [("envelope recipient", a) for a in envelope.recipients]
    candidates += [("To/Cc", a) for _, a in mail.to + mail.cc]
    for where, address in candidates:
        section = lookup.section_for(address)
        if section is not None:
            return Route(section, f"{where} {address}")
    if default_section:
        section = lookup.sections_by_name.get(default_section)
        if section is None:
            raise RouteError(f"processing.default_section '{default_section}' does not exist")
        return Route(section, "default section")
    raise RouteError("no section address among the recipients and no default section")
