"""Match: which case a message belongs to, strongest evidence first.

EVIDENCE is the policy, read top to bottom; the first step that finds a case decides,
and its name and detail go into the log line and the stored message:

1. `token`   — a signed reply token in a recipient address (`support+101-…@`);
2. `headers` — In-Reply-To / References naming a Message-ID we sent (outbox),
   or stored on a case (history, messages), or one of our signed Message-IDs
   (a sender who is not on that case and not of the partner's domain gets a
   new case instead: `apply.stranger`);
3. `tag`     — the seed's `[ID]` in the subject, after any reply/forward prefix
   (Re, AW, SV, Ответ, 回复, `RE[2]:`, `Re(2):`, `Re^2:` …) and behind mailing
   list tags; a tag naming no case is ignored. A tag alone from a sender who
   is not on that case (partner, contacts, watchers, staff) does not touch it:
   the message makes a new case, which records the case it mentioned;
4. nothing   → a new case.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BindParameter, Integer, bindparam, cast, literal, null, select, union_all
from sqlalchemy.orm import Session, joinedload

from mailgated.cases import PendingHistory
from mailgated.directory import SectionsAndStaff
from mailgated.models import Case, History, Outbox, StoredMessage
from mailgated.outbound import tokens
from mailgated.threading.roles import sender_role

REPLY_WORDS = [
    "re", "aw", "antw", "antwort", "sv", "vs", "odp", "ynt", "ref", "réf", "rif", "r",
    "fwd", "fw", "wg", "tr", "rv", "enc", "doorst", "pd", "i", "vl",
    "ответ", "отв", "пересл", "回复", "答复", "转发", "回覆", "轉寄", "返信", "転送",
    "απ", "σχετ", "προωθ",
]  # fmt: skip
_PREFIX = re.compile(
    r"^\s*(?:(?:" + "|".join(sorted(set(REPLY_WORDS), key=len, reverse=True)) + r")"
    r"\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]"  # Re:, RE[2]:, Re(2):, Re^2:, 回复：
    r"|\[(?!\d+\])[^\[\]]*\])\s*",  # a mailing-list tag: [support-list], not our [101]
    re.IGNORECASE,
)
_TAG = re.compile(r"\[(\d{1,12})\]")
MAX_HEADER_IDS = 50


@dataclass(frozen=True)
class Match:
    case: Case | None
    evidence: str  # "token" | "headers" | "tag" | "new"
    detail: str
    token_user_id: int | None = None  # the staff member a reply token was issued to
    answered_user_ids: frozenset[int] = field(default_factory=frozenset)
    mentioned: int | None = None  # a case the subject named that is not this sender's


@dataclass(frozen=True)
class Clues:
    """What matching reads from one message."""

    sender: str
    recipients: list[str]
    message_ids: list[str]  # In-Reply-To first, then References newest first (then a DSN's)
    subject: str


Finder = Callable[[Session, Clues, SectionsAndStaff, bytes], Match | None]


def by_token(
    session: Session, clues: Clues, lookup: SectionsAndStaff, secret: bytes
) -> Match | None:
    token = tokens.token_in(secret, clues.recipients)
    if token is None:
        return None
    case = session.get(Case, token.case_id)
    if case is None:
        return None
    if token.user_id is None:
        return Match(case, "token", "reply token")
    user = lookup.users_by_id.get(token.user_id)
    if user is None or token.generation != user.token_generation:
        # disabled, or `user rotate-token` since: the case is still the token's, but the
        # token no longer vouches for the staff member
        why = "disabled user" if user is None else "rotated"
        detail = f"reply token for user {token.user_id} refused ({why})"
        return Match(case, "token", detail)
    detail = f"reply token for user {token.user_id}"
    return Match(case, "token", detail, token_user_id=token.user_id)


# a matched case's watchers come with it (one statement): its role and copies read them
WITH_WATCHERS = [joinedload(Case.watchers)]
# one statement, built once (its Message-IDs an expanding parameter): every message with
# In-Reply-To or References runs it
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_NO_USER = cast(null(), Integer)
BY_HEADERS: Any = union_all(
    select(Outbox.message_id, Outbox.case_id, Outbox.recipient_user_id, literal("outbox"))
    .where(Outbox.message_id.in_(_IDS), Outbox.case_id.is_not(None)),
    select(History.message_id, History.case_id, _NO_USER, literal("history"))
    .where(History.message_id.in_(_IDS)),
    select(StoredMessage.message_id, StoredMessage.case_id, _NO_USER, literal("messages"))
    .where(StoredMessage.message_id.in_(_IDS), StoredMessage.case_id.is_not(None)),
)  # fmt: skip


def by_headers(
    session: Session, clues: Clues, lookup: SectionsAndStaff, secret: bytes
) -> Match | None:
    ids = clues.message_ids[:MAX_HEADER_IDS]
    if not ids:
        return None
    # on the session's connection, without the ORM's autoflush: outbox rows, history entries
    # and stored messages are written with Core statements, so nothing the ORM holds can
    # match; history entries this transaction deferred are written first if they name one
    pending = PendingHistory.of(session)
    if pending is not None and pending.names(ids):
        pending.write(session)
    rows = session.connection().execute(BY_HEADERS, {"ids": ids}).all()
    found = {mid: (cid, source) for mid, cid, _, source in reversed(rows)}
    for mid in ids:
        case_id, source = found.get(mid, (tokens.read_message_id(secret, mid), "signature"))
        with session.no_autoflush:  # a case with pending changes is in the identity map
            case = None if case_id is None else session.get(Case, case_id, options=WITH_WATCHERS)
        if case is not None:
            # only our mail about this very case verifies who answers it
            users = frozenset(uid for _, cid, uid, _ in rows if uid is not None and cid == case.id)
            if users:
                users = current_readers(session, ids, case.id, lookup)
            return Match(case, "headers", f"{mid} ({source})", answered_user_ids=users)
    return None


def current_readers(
    session: Session, ids: list[str], case_id: int, lookup: SectionsAndStaff
) -> frozenset[int]:
    """The active users to whom we sent these Message-IDs about the case since their last
    `user rotate-token` (mail from before it no longer verifies a reply)."""
    query = select(Outbox.recipient_user_id, Outbox.queued_at).where(
        Outbox.message_id.in_(ids), Outbox.case_id == case_id
    )
    found = set()
    for uid, queued_at in session.connection().execute(query):
        user = lookup.users_by_id.get(uid) if uid is not None else None
        if user is not None and (
            user.tokens_rotated_at is None or queued_at >= user.tokens_rotated_at
        ):
            found.add(user.id)
    return frozenset(found)


def by_tag(session: Session, clues: Clues, lookup: SectionsAndStaff, secret: bytes) -> Match | None:
    ids = subject_tags(clues.subject)
    if not ids:
        return None
    query = select(Case).options(*WITH_WATCHERS).where(Case.id.in_(ids))
    cases = {c.id: c for c in session.scalars(query).unique()}
    for case_id in ids:
        case = cases.get(case_id)
        if case is None:
            continue  # a tag naming no case is ignored
        role = sender_role(session, case, clues.sender, lookup, strong=False)
        if role.name == "other":
            detail = f"subject tag [{case_id}] of a case the sender is not on: new case"
            return Match(None, "new", detail, mentioned=case_id)
        return Match(case, "tag", f"subject tag [{case_id}]")
    return None


EVIDENCE: list[tuple[str, Finder]] = [
    ("token", by_token),
    ("headers", by_headers),
    ("tag", by_tag),
]


def match(session: Session, clues: Clues, lookup: SectionsAndStaff, secret: bytes) -> Match:
    for _name, finder in EVIDENCE:
        found = finder(session, clues, lookup, secret)
        if found is not None:
            return found
    return Match(None, "new", "no token, known Message-ID or subject tag")


def strip_prefixes(subject: str) -> str:
    """The subject without its leading reply/forward prefixes and list tags."""
    rest = subject
    while True:
        found = _PREFIX.match(rest)
        if found is None or not found.group(0):
            return rest.strip()
        rest = rest[found.end() :]


def subject_tags(subject: str) -> list[int]:
    """The `[ID]` tags of a subject, in order, after its prefixes."""
    return list(dict.fromkeys(int(t) for t in _TAG.findall(strip_prefixes(subject))))


def header_ids(in_reply_to: list[str], references: list[str], extra: str | None) -> list[str]:
    """The Message-IDs a message answers, most specific first."""
    found = list(in_reply_to) + list(reversed(references))
    if extra:
        found.append(extra)
    return list(dict.fromkeys(i for i in found if i))
