"""What processing looks up for every message, read once per batch: sections and staff.

A batch of spooled messages is processed in one transaction (see `process.py`);
the section list and the active users are small and needed by nearly every
message (routing, "is this one of our addresses?", "is the sender staff?"), so
they are loaded here once per batch instead of queried per message.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mailgated.directory import normalize_address
from mailgated.models import Section, User


class Known:
    """Sections by address and name, active users by address, id and login."""

    def __init__(self, session: Session) -> None:
        sections = list(session.scalars(select(Section).options(selectinload(Section.manager))))
        self.sections_by_address = {
            normalize_address(s.email): s for s in sections if s.email and s.active
        }
        self.sections_by_id = {s.id: s for s in sections}
        self.sections_by_name = {s.name: s for s in sections}
        self.sections_by_name.update({s.code: s for s in sections if s.code})
        users = list(session.scalars(select(User).where(User.active.is_(True))))
        self.users_by_email = {u.email.lower(): u for u in users}
        self.users_by_id = {u.id: u for u in users}
        self.users_by_login = {u.login: u for u in users}

    def section_for(self, address: str) -> Section | None:
        """The section of an address (plus-addressing allowed), or None."""
        return self.sections_by_address.get(normalize_address(address))

    def ours(self, address: str) -> bool:
        """Is `address` one of our section addresses (with or without +extension)?"""
        return normalize_address(address) in self.sections_by_address

    def staff(self, address: str) -> User | None:
        """The active user with this e-mail address, or None."""
        return self.users_by_email.get(address.strip().lower())
