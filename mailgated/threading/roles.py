"""Who the sender is on a case: staff, partner, watcher or other; and whether staff is verified.

- *staff*: the address of an active user. Verified when the reply token was
  issued to that user, or the mail answers a Message-ID we sent to that user,
  or a trusted Authentication-Results header vouches for the From domain
  (`authres.py`). Anyone can write a staff address into From, so an unverified
  one changes nothing.
- *partner*: the case's partner e-mail, the partner's own address or one of its
  contacts' — or, on strong evidence (token or headers), a new address of the
  partner e-mail's domain (a colleague answering our mail).
- *watcher*: one of the case's watchers.
- *other*: none of these (only possible on strong evidence: a tag alone from a
  stranger never reaches a case, see `match.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.directory import SectionsAndStaff
from mailgated.message import authres
from mailgated.models import Case, Contact, History, Partner, User, Watcher


@dataclass(frozen=True)
class Role:
    name: str  # "staff" | "partner" | "watcher" | "other"
    user: User | None = None
    verified: str = ""  # for staff: the evidence that it is really them ("" = not verified)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


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


def watchers(session: Session, case_id: int) -> list[str]:
    query = select(Watcher.email).where(Watcher.case_id == case_id).order_by(Watcher.id)
    return list(session.scalars(query))


def conversation(session: Session, case_id: int, limit: int = 10) -> list[str]:
    """Message-IDs of the case's mail in and out, oldest first: what mail to the partner
    threads under when the message it answers named none the partner has (a staff reply
    from a client that only referred to our forward, or `case reply`)."""
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


def sender_role(
    session: Session, case: Case, address: str, lookup: SectionsAndStaff, *, strong: bool
) -> Role:
    """The sender's role on `case` (staff verification is `verify`'s job)."""
    address = address.lower()
    user = lookup.staff(address)
    if user is not None:
        return Role("staff", user)
    partners = partner_addresses(session, case)
    if address in partners:
        return Role("partner")
    if strong and case.email_from and domain_of(address) == domain_of(case.email_from):
        return Role("partner")
    if address in watchers(session, case.id):
        return Role("watcher")
    return Role("other")


def verify(
    role: Role,
    *,
    token_user_id: int | None,
    answered_user_ids: frozenset[int],
    auth_headers: list[str],
    trusted_authserv_id: str,
    from_domain: str,
) -> Role:
    """A staff role with the evidence that verifies it, if there is any."""
    if role.user is None:
        return role
    if token_user_id == role.user.id:
        return Role(role.name, role.user, "reply token issued to this user")
    if role.user.id in answered_user_ids:
        return Role(role.name, role.user, "answers a message sent to this user")
    evidence = authres.authenticated(auth_headers, trusted_authserv_id, from_domain)
    if evidence:
        return Role(role.name, role.user, f"Authentication-Results: {evidence}")
    return role
