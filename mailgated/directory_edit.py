"""Changing and retiring what `directory.py` created: the `set`, `remove`, `disable` verbs.

Every change keeps the cases consistent: a category or contact that cases still
use is not removed (one line says how many and how to find them); a disabled
user keeps their history but is no longer staff — their reply tokens and mail
no longer verify, they get no mail, and their open cases are listed for
reassignment; `rotate_token` invalidates one user's reply tokens (a per-user
generation, `outbound/tokens.py`). A disabled section takes no new mail (its
address is refused); its cases stay where they are.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, func, select

from mailgated.addresses import clean_name
from mailgated.directory import Directory
from mailgated.errors import Invalid
from mailgated.models import (
    ACTIVE_STATES,
    Case,
    Category,
    Contact,
    Partner,
    Section,
    User,
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DirectoryEdit:
    """Edits inside the caller's session (committed by the caller)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.session = directory.session

    # users ---------------------------------------------------------------
    def set_user(self, user: User, *, name: str | None = None, email: str | None = None) -> User:
        if name is not None:
            name = clean_name(name, "user name")
            if not name:
                raise Invalid("a user needs a name")
            user.name = name
        if email is not None:
            email = email.strip().lower()
            if "@" not in email:
                raise Invalid(f"'{email}' is not an e-mail address")
            other = self.directory.user_by_email(email)
            if other is not None and other.id != user.id:
                raise Invalid(f"user '{other.login}' already has the e-mail '{email}'")
            user.email = email
        self.session.flush()
        return user

    def disable_user(self, user: User) -> list[Case]:
        """No longer staff; returns their open cases (draft, open, pending) to reassign."""
        user.active = False
        self.session.flush()
        return self.open_cases(user)

    def enable_user(self, user: User) -> None:
        user.active = True
        self.session.flush()

    def rotate_token(self, user: User, now: dt.datetime | None = None) -> int:
        """Invalidate the user's reply tokens (and our earlier mail as proof); new mail to
        them carries the next generation. Returns that generation."""
        user.token_generation += 1
        user.tokens_rotated_at = now or _now()
        self.session.flush()
        return user.token_generation

    def open_cases(self, user: User) -> list[Case]:
        query = (
            select(Case)
            .where(Case.user_id == user.id, Case.state.in_([s.value for s in ACTIVE_STATES]))
            .order_by(Case.id)
        )
        return list(self.session.scalars(query))

    def managed_sections(self, user: User) -> list[Section]:
        query = select(Section).where(Section.manager_id == user.id).order_by(Section.name)
        return list(self.session.scalars(query))

    # sections ------------------------------------------------------------
    def rename_section(self, section: Section, name: str) -> None:
        name = clean_name(name, "section name")
        if not name:
            raise Invalid("a section needs a name")
        other = self.directory.find_section(name)
        if other is not None and other.id != section.id:
            raise Invalid(f"a section named '{name}' already exists")
        section.name = name
        self.session.flush()

    def set_section_active(self, section: Section, active: bool) -> int:
        """Disable (no mail taken at its address) or enable a section; returns its open cases."""
        section.active = active
        self.session.flush()
        return self._count(Case.section_id == section.id, active_only=True)

    # categories ----------------------------------------------------------
    def set_category(
        self, category: Category, *, name: str | None = None, probability: float | None = None
    ) -> None:
        if name is not None:
            name = clean_name(name, "name")
            if not name:
                raise Invalid("a category needs a name")
            taken = self.session.scalar(
                select(Category.id).where(
                    Category.section_id == category.section_id,
                    Category.name == name,
                    Category.id != category.id,
                )
            )
            if taken:
                raise Invalid(f"section '{category.section.name}' already has a category '{name}'")
            category.name = name
        if probability is not None:
            if not 0 <= probability <= 100:
                raise Invalid(f"probability must be between 0 and 100, not {probability}")
            category.probability = probability
        self.session.flush()

    def remove_category(self, category: Category) -> None:
        used = self._count(Case.category_id == category.id)
        if used:
            raise Invalid(
                f"category '{category.name}' is used by {used} case(s) in section"
                f" '{category.section.name}': move them first (`mailgated case list --section"
                f' "{category.section.name}" --category "{category.name}"`)'
            )
        self.session.delete(category)
        self.session.flush()

    # partners ------------------------------------------------------------
    def set_partner(
        self, partner: Partner, *, name: str | None = None, email: str | None = None
    ) -> None:
        if name is not None:
            name = clean_name(name, "name")
            if not name:
                raise Invalid("a partner needs a name")
            taken = self.session.scalar(
                select(Partner.id).where(Partner.name == name, Partner.id != partner.id)
            )
            if taken:
                raise Invalid(f"a partner named '{name}' already exists")
            partner.name = name
        if email is not None:
            email = email.strip().lower()
            if email and "@" not in email:
                raise Invalid(f"'{email}' is not an e-mail address")
            partner.email = email or None
        self.session.flush()

    def set_contact(
        self, contact: Contact, *, name: str | None = None, email: str | None = None
    ) -> None:
        if name is not None:
            name = clean_name(name, "name")
            if not name:
                raise Invalid("a contact needs a name")
            if any(c.name == name and c.id != contact.id for c in contact.partner.contacts):
                raise Invalid(f"partner '{contact.partner.name}' already has a contact '{name}'")
            contact.name = name
        if email is not None:
            email = email.strip().lower()
            if email and "@" not in email:
                raise Invalid(f"'{email}' is not an e-mail address")
            contact.email = email or None
        self.session.flush()

    def remove_contact(self, contact: Contact) -> None:
        used = self._count(Case.contact_id == contact.id)
        if used:
            raise Invalid(
                f"contact '{contact.name}' of partner '{contact.partner.name}' is on {used}"
                " case(s): set another contact on them first (`mailgated case set ID --contact`)"
            )
        partner = contact.partner
        self.session.delete(contact)
        self.session.flush()
        self.session.expire(partner, ["contacts"])

    def _count(self, condition: ColumnElement[bool], active_only: bool = False) -> int:
        query = select(func.count()).select_from(Case).where(condition)
        if active_only:
            query = query.where(Case.state.in_([s.value for s in ACTIVE_STATES]))
        return int(self.session.scalar(query) or 0)
