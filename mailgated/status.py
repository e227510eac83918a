"""`mailgated status`: is the daemon up, what waits, what failed — for people and monitoring.

Everything comes from what any host can read: the `instances` rows the daemons'
heartbeats keep (`mailgated/monitor.py`), the spool directory, the outbox and the
rules tables. `attention` lists what needs a person; the command exits 1 when it is
not empty, so it serves as a monitoring check (Nagios/Icinga exit codes: 0 OK, 2
critical).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from mailgated.models import Instance, Rule, RuleFiring

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailgated.config import Config

STALE_AFTER = 3  # heartbeats missed before a daemon counts as down


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def daemons(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    from mailgated.monitor import HEARTBEAT_SECONDS

    stale = now - dt.timedelta(seconds=STALE_AFTER * HEARTBEAT_SECONDS)
    found = []
    rows = session.scalars(select(Instance).order_by(Instance.started_at.desc())).all()
    for row in rows:
        up = row.stopped_at is None and row.seen_at >= stale
        found.append(
            {
                "instance": row.id,
                "host": row.host,
                "pid": row.pid,
                "version": row.version,
                "up": up,
                "started_at": _iso(row.started_at),
                "seen_at": _iso(row.seen_at),
                "stopped_at": _iso(row.stopped_at),
                "listeners": (row.state or {}).get("listeners", {}),
                "mailboxes": (row.state or {}).get("mailboxes", {}),
            }
        )
    return found


def outbox_counts(session: Session, now: dt.datetime) -> dict[str, Any]:
    """Outbox messages by state, and the age in seconds of the oldest still queued."""
    from mailgated.outbound.outbox import counts

    found = counts(session, now)
    age = found.oldest_queued_age
    return {
        "queued": found.queued,
        "sent": found.sent,
        "failed": found.failed,
        "held": found.held,
        "oldest_queued_seconds": round(age) if age is not None else None,
    }


def rules_summary(session: Session, now: dt.datetime) -> dict[str, Any]:
    last_sweep = session.scalar(select(func.max(Rule.swept_at)))
    day_ago = now - dt.timedelta(days=1)
    return {
        "last_sweep": _iso(last_sweep),
        "firings": session.scalar(select(func.count()).select_from(RuleFiring)) or 0,
        "firings_24h": session.scalar(
            select(func.count()).select_from(RuleFiring).where(RuleFiring.fired_at >= day_ago)
        )
        or 0,
        "last_firing": _iso(session.scalar(select(func.max(RuleFiring.fired_at)))),
    }


def mailboxes(config: Config, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each configured mailbox with the freshest report any daemon gave of it."""
    from mailgated.intake.mailbox import parse_account

    found = []
    for mailbox in config.mailbox:
        name = parse_account(mailbox).name
        best: dict[str, Any] = {}
        by = None
        for d in seen:
            report = d["mailboxes"].get(name)
            if report and (report.get("last_poll") or report.get("error_at") or "") > max(
                best.get("last_poll") or "", best.get("error_at") or ""
            ):
                best, by = report, d["instance"]
        found.append(
            {
                "name": name,
                "section": mailbox.section,
                "last_poll": best.get("last_poll"),
                "last_error": best.get("last_error"),
                "error_at": best.get("error_at"),
                "idle": bool(best.get("idle")),  # waiting in IMAP IDLE for the server's news
                "polled_by": by,
            }
        )
    return found


def gather(config: Config, session: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    """The whole report (what `status --json` prints)."""
    from mailgated.intake.spool import Spool

    now = now or dt.datetime.now(dt.UTC)
    seen = daemons(session, now)
    spool = Spool(config.spool.path).counts()
    report: dict[str, Any] = {
        "daemons": seen,
        "spool": {
            "new": spool.get("new", 0),
            "processing": spool.get("processing", 0),
            "quarantined": spool.get("quarantined", 0),
            "duplicates": spool.get("duplicate", 0),
        },
        "outbox": outbox_counts(session, now),
        "mailboxes": mailboxes(config, seen),
        "rules": rules_summary(session, now),
    }
    report["attention"] = attention(report)
    return report


def attention(report: dict[str, Any]) -> list[str]:
    """What needs a person, one line each; empty when all is well."""
    lines = []
    if not any(d["up"] for d in report["daemons"]):
        lines.append("no daemon is running (mailgated run)")
    if report["outbox"]["failed"]:
        lines.append(
            f"{report['outbox']['failed']} outbound mail(s) failed"
            " (mailgated outbox list --failed; outbox retry)"
        )
    if report["outbox"]["held"]:
        lines.append(
            f"{report['outbox']['held']} outbound mail(s) held by the loop breaker"
            " (mailgated outbox list; outbox retry)"
        )
    if report["spool"]["quarantined"]:
        lines.append(
            f"{report['spool']['quarantined']} message(s) in quarantine"
            " (mailgated spool list --quarantined; spool retry)"
        )
    for m in report["mailboxes"]:
        if m["last_error"]:
            lines.append(f"mailbox {m['name']} failing since {m['error_at']}: {m['last_error']}")
    return lines
