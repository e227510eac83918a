"""Who mail about a case goes to: its partner, its watchers, the mail it threads under.

Threading reads the same addresses to tell a partner or a watcher from a
stranger (`threading/roles.py`); they live here, with the mail we write, so
that `outbound/` needs nothing of `threading/`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.cases import PendingHistory
from mailgated.models import Case, Contact, History, Partner, Section, User


def partner_addresses(session: Session, case: Case) -> set[str]:
    """The case's partner e-mail, its partner's address and its partner's contacts'."""
    found = {case.email_from.lower()} if case.email_from else set()
    if case.partner_id is not None:
        partner_email = session.scalar(select(Partner.email).where(Partner.id == case.partner_id))
        if partner_email:
            found.add(partner_email.lower())
        contacts = session.scalars(
            select(Contact.email).where(
                Contact.partner_id == case.partner_id, Contact.email.is_not(None)
            )
        )
        found.update(c.lower() for c in contacts if c)
    return found


def partner_address(session: Session, case: Case) -> str | None:
    """Where mail for the partner goes: the case's partner e-mail, else a partner address."""
    if case.email_from:
        return case.email_from
    addresses = sorted(partner_addresses(session, case))
    return addresses[0] if addresses else None


def watchers(case: Case) -> list[str]:
    """The case's watchers, oldest first: its collection, loaded once per session (rules
    that add watchers with Core statements expire it, `CaseService.bulk_history`)."""
    return [w.email for w in case.watchers]


def conversation(session: Session, case_id: int, limit: int = 10) -> list[str]:
    """Message-IDs of the case's mail in and out, oldest first: what mail to the partner
    threads under when the message it answers named none the partner has (a staff reply
    from a client that only referred to our forward, or `case reply`)."""
    pending = PendingHistory.of(session)
    if pending is not None and pending.about(case_id):
        pending.write(session)  # this transaction's deferred entries of the case count too
    query = (
        select(History.message_id)
        .where(
            History.case_id == case_id,
            History.kind.in_(("email_in", "email_out")),
            History.message_id.is_not(None),
        )
        .order_by(History.id.desc())
        .limit(limit)
    )
    return [m for m in reversed(session.scalars(query).all()) if m]


@dataclass(frozen=True)
class Insiders:
    """Who is internal: the section and user addresses we know, and `[security]
    internal_domains`. Mail to anyone else never names an internal address (issue 12
    item 14): a copy to a partner-side watcher must not show `expert@ourcompany`."""

    addresses: frozenset[str]
    domains: frozenset[str]

    @classmethod
    def load(cls, session: Session, domains: tuple[str, ...]) -> Insiders:
        users = session.scalars(select(User.email))
        sections = session.scalars(select(Section.email).where(Section.email.is_not(None)))
        return cls.of([*users, *(s for s in sections if s)], domains)

    @classmethod
    def of(cls, addresses: Iterable[str], domains: tuple[str, ...]) -> Insiders:
        return cls(
            frozenset(a.strip().lower() for a in addresses),
            frozenset(d.strip().lower().lstrip("@") for d in domains),
        )

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        address = address.strip().lower()
        local, _, domain = address.rpartition("@")
        plain = f"{local.partition('+')[0]}@{domain}"
        return address in self.addresses or plain in self.addresses or domain in self.domains


def audiences(addresses: list[str], insiders: Insiders) -> list[list[str]]:
    """The recipients in groups that may see each other: outsiders together, insiders
    together (one message per group)."""
    outside = [a for a in addresses if a not in insiders]
    inside = [a for a in addresses if a in insiders]
    return [group for group in (outside, inside) if group]
