"""Who the sender is on a case: staff, partner, watcher or other; and whether staff is verified.

- *staff*: the address of an active user. Verified when the reply token was
  issued to that user, or the mail answers a Message-ID we sent to that user,
  or a trusted Authentication-Results header vouches for the From domain
  (`authres.py`). Anyone can write a staff address into From, so an unverified
  one changes nothing. A disabled user (`mailgated user disable`) is never
  verified: their mail is kept as unverified and changes nothing.
- *partner*: the case's partner e-mail, the partner's own address or one of its
  contacts' — or, with our reply token, a new address of the partner e-mail's
  domain (a colleague answering our mail), unless that domain is a public mail
  provider's (`PUBLIC_DOMAINS`, `[security] public_domains`), whose users are
  strangers to each other. Quoted Message-IDs alone make no colleague a
  partner: see `apply.stranger`.
- *watcher*: one of the case's watchers.
- *other*: none of these (only possible on strong evidence: a tag alone from a
  stranger never reaches a case, see `match.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailgated.directory import SectionsAndStaff
from mailgated.message import authres
from mailgated.models import Case, User
from mailgated.outbound.recipients import partner_addresses, watchers


@dataclass(frozen=True)
class Role:
    name: str  # "staff" | "partner" | "watcher" | "other"
    user: User | None = None
    verified: str = ""  # for staff: the evidence that it is really them ("" = not verified)


# Public mail providers: two addresses there say nothing about being colleagues. The
# largest by users in the regions mailgated's users write from; `[security]
# public_domains` adds more.
# fmt: off
PUBLIC_DOMAINS = frozenset({
    "aol.com", "bk.ru", "fastmail.com", "gmail.com", "gmx.at", "gmx.ch", "gmx.com",
    "gmx.de", "gmx.net", "googlemail.com", "hotmail.co.uk", "hotmail.com", "hotmail.de",
    "hotmail.fr", "icloud.com", "inbox.ru", "libero.it", "list.ru", "live.com", "mac.com",
    "mail.com", "mail.ru", "me.com", "msn.com", "orange.fr", "outlook.com", "outlook.de",
    "pm.me", "proton.me", "protonmail.com", "qq.com", "rambler.ru", "t-online.de",
    "ukr.net", "web.de", "yahoo.co.uk", "yahoo.com", "yahoo.de", "yahoo.fr", "yandex.com",
    "yandex.ru", "ya.ru", "zoho.com",
})
# fmt: on


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def same_organisation(address: str, other: str, public: frozenset[str] = frozenset()) -> bool:
    """Do these addresses share a domain that is an organisation's own (not a public mail
    provider's: `PUBLIC_DOMAINS` and `public`)?"""
    domain = domain_of(address)
    return domain == domain_of(other) and domain not in PUBLIC_DOMAINS and domain not in public


def sender_role(
    session: Session,
    case: Case,
    address: str,
    lookup: SectionsAndStaff,
    *,
    strong: bool,
    public: frozenset[str] = frozenset(),
) -> Role:
    """The sender's role on `case` (staff verification is `verify`'s job); `public`: more
    public mail providers' domains than `PUBLIC_DOMAINS`."""
    address = address.lower()
    user = lookup.staff(address)
    if user is not None:
        return Role("staff", user)
    gone = lookup.disabled(address)
    if gone is not None:
        return Role("unverified", gone)
    partners = partner_addresses(session, case)
    if address in partners:
        return Role("partner")
    if strong and case.email_from and same_organisation(address, case.email_from, public):
        return Role("partner")
    if address in watchers(case):
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
