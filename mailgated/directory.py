"""The directory: users, partners, contacts, partner categories, sections, categories.

Lookups by name raise NotFound with a line the admin can act on; creation
checks uniqueness and keeps the section tree free of cycles.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, selectinload

from mailgated.addresses import clean_name, normalize_address
from mailgated.errors import Invalid, NotFound
from mailgated.models import (
    Category,
    Contact,
    Partner,
    PartnerCategory,
    PartnerCategoryLink,
    Section,
    User,
)

# built once, one statement: the sender of every new case is looked up with it
SENDER_BY_EMAIL = select(
    select(Contact.id).where(Contact.email == bindparam("address")).limit(1).scalar_subquery(),
    select(Partner.id)
    .where(func.lower(Partner.email) == bindparam("address"))
    .limit(1)
    .scalar_subquery(),
)


def split_path(path: str) -> list[str]:
    parts = [p.strip() for p in path.split("/")]
    if not path.strip() or any(not p for p in parts):
        raise Invalid(f"bad category path {path!r}: use names separated by ' / '")
    return parts


class Directory:
    """People and queues; every method works inside the caller's session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # users ---------------------------------------------------------------
    def user(self, login: str) -> User:
        user = self.session.scalar(select(User).where(User.login == login))
        if user is None:
            raise NotFound(f"no user with login '{login}' (see `mailgated user list`)")
        return user

    def user_by_email(self, address: str) -> User | None:
        return self.session.scalar(
            select(User).where(func.lower(User.email) == normalize_address(address))
        )

    def users(self) -> list[User]:
        return list(self.session.scalars(select(User).order_by(User.login)))

    def add_user(self, login: str, name: str, email: str) -> User:
        login, email = clean_name(login, "login"), email.strip()
        name = clean_name(name, "user name")
        if not login:
            raise Invalid("a user needs a login")
        if "@" not in email:
            raise Invalid(f"'{email}' is not an e-mail address")
        if self.session.scalar(select(User.id).where(User.login == login)):
            raise Invalid(f"a user with login '{login}' already exists")
        if self.user_by_email(email):
            raise Invalid(f"a user with e-mail '{email}' already exists")
        user = User(login=login, name=name, email=email.lower())
        self.session.add(user)
        self.session.flush()
        return user

    # sections ------------------------------------------------------------
    def section(self, name_or_code: str) -> Section:
        section = self.session.scalar(select(Section).where(Section.name == name_or_code))
        if section is None:
            section = self.session.scalar(select(Section).where(Section.code == name_or_code))
        if section is None:
            raise NotFound(f"no section named '{name_or_code}' (see `mailgated section list`)")
        return section

    def find_section(self, name: str) -> Section | None:
        return self.session.scalar(select(Section).where(Section.name == name))

    def sections(self) -> list[Section]:
        return list(self.session.scalars(select(Section).order_by(Section.name)))

    def section_by_address(self, address: str) -> Section | None:
        return self.session.scalar(
            select(Section).where(func.lower(Section.email) == normalize_address(address))
        )

    def section_addresses(self) -> dict[str, str]:
        """Every enabled section's address (normalized) → section name; for the SMTP listener."""
        rows = self.session.execute(
            select(Section.email, Section.name).where(
                Section.email.is_not(None), Section.active.is_(True)
            )
        )
        return {normalize_address(email): name for email, name in rows if email}

    def subtree_ids(self, section: Section) -> list[int]:
        """The section and all its descendants (one query for the whole tree)."""
        children: dict[int | None, list[int]] = {}
        for sid, parent in self.session.execute(select(Section.id, Section.parent_id)):
            children.setdefault(parent, []).append(sid)
        found, todo = [], [section.id]
        while todo:
            sid = todo.pop()
            found.append(sid)
            todo.extend(children.get(sid, []))
        return found

    def add_section(
        self,
        name: str,
        parent: str | None = None,
        manager: str | None = None,
        email: str | None = None,
        code: str | None = None,
    ) -> tuple[Section, list[str]]:
        """Create a section; a missing parent is created too (the seed defines children first).

        Returns the section and the names of parents that had to be created.
        """
        name = clean_name(name, "section name")
        code = clean_name(code, "section code") if code else code
        if not name:
            raise Invalid("a section needs a name")
        if self.find_section(name):
            raise Invalid(f"a section named '{name}' already exists")
        if code and self.session.scalar(select(Section.id).where(Section.code == code)):
            raise Invalid(f"a section with code '{code}' already exists")
        if email:
            email = self._check_section_email(email)
        created: list[str] = []
        parent_section = None
        if parent:
            if parent.strip() == name:
                raise Invalid(f"section '{name}' cannot be its own parent")
            parent_section = self.find_section(parent.strip())
            if parent_section is None:
                parent_section = Section(name=parent.strip())
                self.session.add(parent_section)
                created.append(parent_section.name)
        section = Section(
            name=name,
            code=code or None,
            parent=parent_section,
            manager=self.user(manager) if manager else None,
            email=email or None,
        )
        self.session.add(section)
        self.session.flush()
        return section, created

    def _check_section_email(self, email: str) -> str:
        email = email.strip().lower()
        if "@" not in email or "+" in email.split("@")[0]:
            raise Invalid(f"'{email}' is not a plain e-mail address for a section")
        if self.session.scalar(select(Section.id).where(func.lower(Section.email) == email)):
            raise Invalid(f"another section already uses the address '{email}'")
        return email

    def update_section(
        self,
        section: Section,
        *,
        parent: str | None = None,
        manager: str | None = None,
        email: str | None = None,
        code: str | None = None,
        policies: dict[str, bool] | None = None,
    ) -> Section:
        if parent is not None:
            self.set_parent(section, self.section(parent) if parent else None)
        if manager is not None:
            section.manager = self.user(manager) if manager else None
        if email is not None:
            section.email = self._check_section_email(email) if email else None
        if code is not None:
            section.code = code or None
        for key, value in (policies or {}).items():
            if not hasattr(Section, key):
                raise Invalid(f"unknown section policy '{key}'")
            setattr(section, key, value)
        self.session.flush()
        return section

    def set_parent(self, section: Section, parent: Section | None) -> None:
        """Re-parent a section, refusing any move that would make the tree a cycle."""
        node = parent
        while node is not None:
            if node.id == section.id:
                raise Invalid(
                    f"cannot put section '{section.name}' under '{parent.name if parent else ''}':"
                    " that would make a cycle in the section tree"
                )
            node = node.parent
        section.parent = parent

    # categories ----------------------------------------------------------
    def category(self, section: Section, name: str) -> Category:
        category = self.session.scalar(
            select(Category).where(Category.section_id == section.id, Category.name == name)
        )
        if category is None:
            raise NotFound(f"no category '{name}' in section '{section.name}'")
        return category

    def categories(self, section: Section | None = None) -> list[Category]:
        query = select(Category).join(Section).order_by(Section.name, Category.name)
        if section is not None:
            query = query.where(Category.section_id == section.id)
        return list(self.session.scalars(query))

    def add_category(
        self, name: str, section: Section, probability: float | None = None
    ) -> Category:
        name = clean_name(name, "category name")
        if probability is not None and not 0 <= probability <= 100:
            raise Invalid(f"probability must be between 0 and 100, not {probability}")
        if self.session.scalar(
            select(Category.id).where(Category.section_id == section.id, Category.name == name)
        ):
            raise Invalid(f"section '{section.name}' already has a category '{name}'")
        category = Category(name=name, section=section, probability=probability)
        self.session.add(category)
        self.session.flush()
        return category

    # partners ------------------------------------------------------------
    def partner(self, name: str) -> Partner:
        partner = self.session.scalar(select(Partner).where(Partner.name == name))
        if partner is None:
            raise NotFound(f"no partner named '{name}' (see `mailgated partner list`)")
        return partner

    def partners(self) -> list[Partner]:
        return list(self.session.scalars(select(Partner).order_by(Partner.name)))

    def add_partner(self, name: str, categories: tuple[str, ...] | list[str] = ()) -> Partner:
        name = clean_name(name, "partner name")
        if not name:
            raise Invalid("a partner needs a name")
        if self.session.scalar(select(Partner.id).where(Partner.name == name)):
            raise Invalid(f"a partner named '{name}' already exists")
        partner = Partner(name=name)
        partner.categories = [self.partner_category(path) for path in categories]
        self.session.add(partner)
        self.session.flush()
        return partner

    def contact(self, partner: Partner, name: str) -> Contact:
        for contact in partner.contacts:
            if contact.name == name or (contact.email or "") == name.lower():
                return contact
        raise NotFound(f"partner '{partner.name}' has no contact '{name}'")

    def add_contact(self, partner: Partner, name: str, email: str | None) -> Contact:
        name = clean_name(name, "contact name")
        if email is not None and "@" not in email:
            raise Invalid(f"'{email}' is not an e-mail address")
        if any(c.name == name for c in partner.contacts):
            raise Invalid(f"partner '{partner.name}' already has a contact '{name}'")
        contact = Contact(partner=partner, name=name, email=email.lower() if email else None)
        self.session.add(contact)
        self.session.flush()
        return contact

    def find_sender(self, address: str) -> tuple[Partner | None, Contact | None]:
        """The partner and contact behind an e-mail address, if we know it.

        One Core query on the session's connection, without the ORM's autoflush: it runs once
        per new case, and directory changes are flushed where they are made (`Directory`,
        `DirectoryEdit`), so there is nothing pending that could match."""
        address = address.strip().lower()
        found = self.session.connection().execute(SENDER_BY_EMAIL, {"address": address})
        contact_id, partner_id = found.one()
        if contact_id is not None:
            contact = self.session.get(Contact, contact_id)
            assert contact is not None
            return contact.partner, contact
        return (self.session.get(Partner, partner_id) if partner_id is not None else None), None

    # partner categories ----------------------------------------------------
    def partner_category(self, path: str) -> PartnerCategory:
        normalized = " / ".join(split_path(path))
        category = self.session.scalar(
            select(PartnerCategory).where(PartnerCategory.path == normalized)
        )
        if category is None:
            raise NotFound(f"no partner category '{normalized}'")
        return category

    def partner_categories(self) -> list[PartnerCategory]:
        return list(self.session.scalars(select(PartnerCategory).order_by(PartnerCategory.path)))

    def add_partner_category(self, path: str) -> tuple[PartnerCategory, list[str]]:
        """Create "A / B / C", making the missing ancestors; returns it and what was created."""
        parent: PartnerCategory | None = None
        created: list[str] = []
        parts = split_path(clean_name(path, "partner category"))
        for depth in range(len(parts)):
            full = " / ".join(parts[: depth + 1])
            node = self.session.scalar(select(PartnerCategory).where(PartnerCategory.path == full))
            if node is None:
                node = PartnerCategory(name=parts[depth], path=full, parent=parent)
                self.session.add(node)
                self.session.flush()
                created.append(full)
            parent = node
        assert parent is not None
        return parent, created

    def categorize_partner(self, partner: Partner, path: str) -> None:
        category = self.partner_category(path)
        if category not in partner.categories:
            self.session.add(PartnerCategoryLink(partner_id=partner.id, category_id=category.id))
            self.session.flush()
            self.session.expire(partner, ["categories"])


# what SectionsAndStaff reads for every batch, built once
SECTIONS = select(Section).options(selectinload(Section.manager))
USERS = select(User)


class SectionsAndStaff:
    """Sections by address, id and name, active users by address, id and login: read once
    per batch of messages (they are few and nearly every message needs them)."""

    def __init__(self, session: Session) -> None:
        sections = list(session.scalars(SECTIONS))
        self.sections_by_address = {
            normalize_address(s.email): s for s in sections if s.email and s.active
        }
        self.sections_by_id = {s.id: s for s in sections}
        self.sections_by_name = {s.name: s for s in sections}
        self.sections_by_name.update({s.code: s for s in sections if s.code})
        everyone = list(session.scalars(USERS))
        users = [u for u in everyone if u.active]
        self.disabled_by_email = {u.email.lower(): u for u in everyone if not u.active}
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

    def disabled(self, address: str) -> User | None:
        """The disabled user (`mailgated user disable`) with this e-mail address, or None."""
        return self.disabled_by_email.get(address.strip().lower())
