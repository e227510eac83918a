"""Processing: spooled messages → cases and queued mail, in one transaction per batch.

A worker claims up to `[processing] batch_size` spool files, fewer once they
hold `batch_bytes` (by rename: two workers never take the same one) and, for
each, in order: parse, classify, route, match, apply (`threading/`), store
the raw message — unique on (Message-ID, hash without trace headers), so a
message delivered twice is recorded once — and collect the mail to send.
Messages an earlier batch recorded are set aside as duplicates before anything
is written. The batch runs first without a savepoint per message; if one
message fails, the batch rolls back and runs again with each message in its
own SAVEPOINT, so the one that fails rolls back only itself. History entries
and raw messages are written together at the end of the batch (or of a
message's savepoint), or earlier when something in the batch reads them
(cases.PendingHistory). The batch's mail is queued in the outbox and
everything commits at once (one fsync for the whole batch on SQLite); only
then are the spool files deleted. A crash before the commit leaves the files to be claimed again.

A message that cannot be read (ParseError) or routed (RouteError) goes to
quarantine with the reason; any other failure puts it back for a retry, and
after `[spool] max_failures` attempts into quarantine. When the database is
unavailable the whole batch goes back unchanged, not counted as failures.

One INFO line per message (logger `mailgated.process`): source, Message-ID,
sender, case, what was done and which evidence matched.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mailgated.cases import PendingHistory
from mailgated.config import Config, ConfigError
from mailgated.db import STREAM_BLOB, Database, chunks, write_blob
from mailgated.directory import SectionsAndStaff
from mailgated.errors import first_line
from mailgated.intake.identity import content_hash
from mailgated.intake.spool import Claimed, Spool
from mailgated.message import lists, quote
from mailgated.message.classify import classify
from mailgated.message.parse import ParseError, parse
from mailgated.message.patterns import Patterns
from mailgated.models import StoredMessage, utcnow
from mailgated.outbound.case_mail import CaseMail
from mailgated.outbound.compose import Composer
from mailgated.outbound.outbox import Outgoing, enqueue
from mailgated.rules.engine import Cascade, RulesEngine
from mailgated.threading.apply import Handling, Incoming, Outcome, apply
from mailgated.threading.match import Clues, Match, header_ids, match
from mailgated.threading.route import Route, RouteError, route

if TYPE_CHECKING:
    from mailgated.monitor import Metrics

log = logging.getLogger("mailgated.process")

UNAVAILABLE = (OperationalError, InterfaceError)
INSERT_STORED_MESSAGE = insert(StoredMessage)


@dataclass
class Result:
    """One claimed message's fate in a batch."""

    claimed: Claimed
    incoming: Incoming | None = None
    status: str = "pending"  # done | duplicate | retry | quarantine
    reason: str = ""
    outcome: Outcome | None = None
    match: Match | None = None
    route: str = ""

    @cached_property
    def key(self) -> tuple[str, str]:
        """What makes a stored message unique: its Message-ID and its content hash."""
        return _message_id(self), content_hash(self.claimed.raw)

    def restart(self) -> None:
        """Forget what a rolled-back attempt at the batch decided."""
        self.status, self.reason, self.route = "pending", "", ""
        self.outcome = self.match = None


@dataclass(frozen=True)
class Transaction:
    """What the messages of one batch's transaction share."""

    session: Session
    lookup: SectionsAndStaff
    rules: Cascade  # rules run on each case change, in this batch
    now: dt.datetime
    history: PendingHistory | None = None  # the history entries not yet written


def automatic_patterns(config: Config) -> Patterns:
    """The out-of-office and receipt patterns, with the `[automatic]` additions."""
    automatic = config.automatic
    try:
        return Patterns.build(
            automatic.subject_prefixes, automatic.body_patterns, automatic.builtin
        )
    except re.error as exc:
        raise ConfigError(f"[automatic] body_patterns: not a regular expression: {exc}") from None


class DatabaseUnavailable(Exception):
    """The batch could not reach the database; its messages stay claimed, unchanged, in
    `claimed`, for the caller to process again once the database answers."""

    def __init__(self, reason: str, claimed: list[Claimed]) -> None:
        super().__init__(reason)
        self.claimed = claimed


class Processor:
    """Processes batches of spooled messages; synchronous (run it in a worker thread)."""

    def __init__(
        self,
        config: Config,
        db: Database,
        spool: Spool,
        composer: Composer,
        rules: RulesEngine,
        *,
        now: Callable[[], dt.datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics  # counts by way in and outcome, latency (mailgated/monitor.py)
        self.db = db
        self.spool = spool
        self.composer = composer
        self.rules = rules
        self.now = now
        self.patterns = automatic_patterns(config)

    def run_once(self, limit: int | None = None) -> list[Result]:
        """Claim and process one batch; returns what happened to each message."""
        processing = self.config.processing
        claimed = self.spool.claim_batch(limit or processing.batch_size, processing.batch_bytes)
        return self.process(claimed) if claimed else []

    def drain(self) -> int:
        """Process until the spool is empty (tests, benchmarks); returns the messages seen."""
        seen = 0
        while results := self.run_once():
            seen += len(results)
        return seen

    def process(self, claimed: list[Claimed]) -> list[Result]:
        results = [self._read(item) for item in claimed]
        ready = [r for r in results if r.incoming is not None]
        if ready:
            try:
                self._transaction(ready)
            except UNAVAILABLE as exc:
                for r in ready:
                    r.status = "unavailable"
                self._finish([r for r in results if r.status != "unavailable"])
                held = [r.claimed for r in ready]
                raise DatabaseUnavailable(first_line(exc), held) from exc
            except Exception as exc:  # the commit itself failed: every message is retried
                log.exception("batch of %d failed", len(ready))
                for r in ready:
                    r.status, r.reason = "retry", f"batch failed: {first_line(exc)}"
        self._finish(results)
        return results

    # -- reading (no database) --------------------------------------------------
    def _read(self, claimed: Claimed) -> Result:
        result = Result(claimed)
        try:
            mail = parse(claimed.raw, max_attachment=self.config.processing.max_attachment_size)
        except ParseError as exc:
            result.status, result.reason = "quarantine", str(exc)
            return result
        envelope = claimed.envelope
        verdict = classify(mail, envelope.envelope_from, self.patterns)
        if verdict.kind == "list":  # the author, not the list; the list's footer trimmed
            mail = lists.as_author(mail, self.config.processing.max_attachment_size)
        sender = mail.from_addr or (envelope.envelope_from or "").strip("<>").lower()
        own = envelope.recipients  # our addresses: our own mail forwarded back is a quote
        text = quote.new_text(mail.text, own) if verdict.text is None else verdict.text
        result.incoming = Incoming(mail, envelope, verdict, text, sender)
        return result

    # -- the transaction --------------------------------------------------------
    def _transaction(self, ready: list[Result]) -> None:
        """The batch in one transaction, first without a savepoint per message (a savepoint
        costs a flush and two statements per message, about a sixth of the work); if any
        message fails, the batch rolls back and runs again with one savepoint per message,
        so that the failing one rolls back alone. Known duplicates and unroutable messages
        are found before anything is written, so they need no rollback."""
        now = self.now()
        try:
            with self.db.session() as session:
                self._batch(session, ready, now, isolated=False)
            return
        except UNAVAILABLE:
            raise
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise
            log.debug("batch of %d failed (%s): again, a savepoint per message", len(ready), exc)
            for result in ready:
                result.restart()
        with self.db.session() as session:
            self._batch(session, ready, now, isolated=True)

    def _batch(
        self, session: Session, ready: list[Result], now: dt.datetime, isolated: bool
    ) -> None:
        lookup = SectionsAndStaff(session)
        cascade = self.rules.cascade(session)
        # history entries wait and are written together (one statement for many on
        # PostgreSQL) — unless a rule may read history on any case event
        pending = None if cascade.rules() else PendingHistory.start(session)
        txn = Transaction(session, lookup, cascade, now, pending)
        self._known_duplicates(session, ready)
        todo = [r for r in ready if r.status == "pending"]
        keys = {r.key for r in todo}
        isolated = isolated or len(keys) < len(todo)  # a message twice in this batch
        for result in todo:
            try:
                routed = self._route(result, lookup)
            except RouteError as exc:
                result.status, result.reason = "quarantine", str(exc)
                continue
            if isolated:
                self._isolated(txn, result, routed)
            else:
                self._apply(txn, result, routed)
        if pending is not None:
            pending.write(session)  # before the outbox's own entries, and before the commit
        self._enqueue(session, [r for r in ready if r.status == "done"], now)

    def _route(self, result: Result, lookup: SectionsAndStaff) -> Route:
        incoming = result.incoming
        assert incoming is not None
        routed = route(
            incoming.mail, incoming.envelope, lookup, self.config.processing.default_section
        )
        result.route = routed.why
        return routed

    def _isolated(self, txn: Transaction, result: Result, routed: Route) -> None:
        """One message in its own savepoint: a failure rolls back this message only."""
        session = txn.session
        try:
            self._savepoint(txn, result, routed)
        except IntegrityError as exc:
            stored = _stored_cases(session, {result.key})
            if result.key in stored:  # a copy recorded meanwhile (another worker)
                _set_aside(result, stored[result.key])
            else:
                log.exception("message %s failed", result.claimed.id)
                result.status, result.reason = "retry", first_line(exc)
        except UNAVAILABLE:
            raise
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            log.exception("message %s failed", result.claimed.id)
            result.status, result.reason = "retry", first_line(exc)
        except Exception as exc:
            log.exception("message %s failed", result.claimed.id)
            result.status, result.reason = "retry", f"{type(exc).__name__}: {first_line(exc)}"

    def _savepoint(self, txn: Transaction, result: Result, routed: Route) -> None:
        """The message in a SAVEPOINT: its history entries written inside it; if it fails,
        what it made is forgotten with the rolled-back savepoint."""
        session, pending = txn.session, txn.history
        known = set(session.identity_map.keys())
        try:
            with session.begin_nested():
                self._apply(txn, result, routed)
                if pending is not None:
                    pending.write(session)
        except BaseException:
            if pending is not None:
                pending.discard()  # entries not yet written: gone with the savepoint
            # a case is added to the session as already written (CaseService.create): its
            # object outlives the rolled-back row, and on SQLite the next case reuses its id
            for key in set(session.identity_map.keys()) - known:
                obj = session.identity_map.get(key)
                if obj is not None:
                    session.expunge(obj)
            raise

    def _apply(self, txn: Transaction, result: Result, routed: Route) -> None:
        """Match the message to its case, do what its sender's role calls for, store it."""
        session, lookup, now = txn.session, txn.lookup, txn.now
        incoming = result.incoming
        assert incoming is not None
        mail, envelope = incoming.mail, incoming.envelope
        clues = Clues(
            sender=incoming.sender,
            recipients=list(envelope.recipients) + [a for _, a in mail.to + mail.cc],
            message_ids=header_ids(
                mail.in_reply_to, mail.references, incoming.verdict.original_message_id
            ),
            subject=mail.subject,
        )
        result.match = match(session, clues, lookup, self.composer.secret)
        out = CaseMail(
            session, self.config, lookup, self.composer, answering=mail, sender=incoming.sender
        )
        handling = Handling(
            session, self.config, lookup, incoming, routed.section.id, result.match, now, out,
            rules=txn.rules,
        )  # fmt: skip
        result.outcome = apply(handling)
        self._store(session, result, now, txn.history)
        result.status = "done"

    def _known_duplicates(self, session: Session, ready: list[Result]) -> None:
        """Messages recorded by an earlier batch: set aside before anything is written."""
        pending = [r for r in ready if r.status == "pending"]
        stored = _stored_cases(session, {r.key for r in pending})
        for result in pending:
            if result.key in stored:
                _set_aside(result, stored[result.key])

    def _store(
        self, session: Session, result: Result, now: dt.datetime, pending: PendingHistory | None
    ) -> None:
        """The raw message, once: the unique key (Message-ID, content hash) refuses a second.
        It waits with the batch's history entries (`pending`), unless written in place."""
        incoming, outcome = result.incoming, result.outcome
        assert incoming is not None and outcome is not None
        envelope, mail = incoming.envelope, incoming.mail
        raw = result.claimed.raw
        connection = session.connection()
        streamed = len(raw) >= STREAM_BLOB and connection.dialect.name == "sqlite"
        row = {
            "message_id": result.key[0],
            "content_hash": result.key[1],
            "received_at": envelope.received_at,
            "processed_at": now,
            "source": envelope.source[:200],
            "envelope_from": envelope.envelope_from,
            "envelope_to": ", ".join(envelope.recipients) or None,
            "sender": incoming.sender[:998] or None,
            "subject": mail.subject[:1000] or None,
            "case_id": outcome.case_id,
            "action": _describe(result)[:200],
        } | ({} if streamed else {"raw": raw})
        if pending is not None and not streamed:
            pending.add_row(INSERT_STORED_MESSAGE, row)  # a duplicate fails the batch's write
            return
        inserted = connection.execute(  # Core, on the session's connection: no ORM overhead
            INSERT_STORED_MESSAGE.values(raw=func.zeroblob(len(raw)))
            if streamed
            else INSERT_STORED_MESSAGE,
            row,
        )
        if streamed:  # written in place: SQLite would copy a bound blob twice (issue 12)
            key = inserted.inserted_primary_key
            assert key is not None
            write_blob(connection, "messages", "raw", key[0], raw)

    def _enqueue(self, session: Session, done: list[Result], now: dt.datetime) -> None:
        """The batch's mail in one call (one look at the loop breaker's windows), the mail
        people wrote first, then the automatic (acknowledgements, notices)."""
        pairs = [pair for r in done if r.outcome is not None for pair in r.outcome.mails]
        pairs.sort(key=lambda pair: pair[1])  # stable: in order within each kind
        if pairs:
            items: list[Outgoing] = [item for item, _ in pairs]
            flags = [auto for _, auto in pairs]
            enqueue(session, items, self.config.outbound, automatic=flags, now=now)

    # -- after the commit -------------------------------------------------------
    def _finish(self, results: list[Result]) -> None:
        # The committed batch's files are cleared away here, on the one serial path: an
        # emptying and a rename each (`Spool.done_many`), about 25 µs a file. A thread of
        # the worker did it beside the next batch until 2026-12-06, when it also waited on
        # a directory fsync; by then it only made the two threads trade the GIL at every
        # call, and the worker spent 0.15 ms more CPU a message end to end (issue 15).
        self.spool.done_many([r.claimed for r in results if r.status == "done"])
        for r in results:
            if r.status == "duplicate":
                self.spool.set_aside_duplicate(r.claimed, r.reason)
            elif r.status == "quarantine":
                self.spool.quarantine(r.claimed, r.reason)
            elif r.status == "retry" and self.spool.fail(
                r.claimed, r.reason, self.config.spool.max_failures
            ):
                r.status = "quarantine"
            _log(r)
            if self.metrics is not None:
                e = r.claimed.envelope
                self.metrics.message_done(e.source, r.status, e.failures == 0, e.received_at)


# the stored copies of a batch's messages (built once; the IN list an expanding parameter)
STORED = select(StoredMessage.message_id, StoredMessage.content_hash, StoredMessage.case_id).where(
    StoredMessage.message_id.in_(bindparam("ids", expanding=True))
)


def _stored_cases(
    session: Session, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], int | None]:
    """The case of each of these messages (Message-ID, content hash) already recorded."""
    found: dict[tuple[str, str], int | None] = {}
    for chunk in chunks(sorted({message_id for message_id, _ in keys})):
        for message_id, digest, case_id in session.execute(STORED, {"ids": chunk}):
            if (message_id, digest) in keys:
                found[(message_id, digest)] = case_id
    return found


def _set_aside(result: Result, case_id: int | None) -> None:
    """A message recorded already: nothing changes; the outcome names the first copy's case."""
    result.status, result.reason = "duplicate", _duplicate_reason(case_id or 0)
    result.outcome = Outcome(case_id or None, "duplicate")


def _duplicate_reason(case_id: int) -> str:
    where = f"case {case_id}" if case_id else "no case"
    return f"already recorded (same Message-ID and content, {where})"


def _message_id(result: Result) -> str:
    incoming = result.incoming
    found = incoming.mail.message_id if incoming else ""
    return (found or result.claimed.envelope.message_id)[:998]


def _describe(result: Result) -> str:
    action = result.outcome.action if result.outcome else result.status
    if result.match is None:
        return action
    return f"{action} [{result.match.evidence}: {result.match.detail}]"


def _log(result: Result) -> None:
    envelope = result.claimed.envelope
    sender = result.incoming.sender if result.incoming else envelope.envelope_from
    case_id = result.outcome.case_id if result.outcome else None
    what = {
        "done": _describe(result),
        "duplicate": f"duplicate: {result.reason}, nothing changed (spool list --duplicates)",
        "retry": f"failed, will retry: {result.reason}",
        "quarantine": f"quarantined: {result.reason}",
    }.get(result.status, result.status)
    log.log(
        logging.WARNING if result.status == "quarantine" else logging.INFO,
        "%s: %s %s from <%s>: case %s, %s",
        result.claimed.id,
        envelope.source,
        _message_id(result) or "(no Message-ID)",
        sender or "",
        case_id if case_id is not None else "-",
        what,
        extra={"spool_id": result.claimed.id},
    )
