"""Torture: a hostile corpus, two loop robots and forged staff mail through a running daemon.

    .venv/bin/python bench/torture.py [-n 2000] [--seed 1] [--robots 60] [--pg URL] [--keep]

Starts the real daemon (`python -m mailgated --config … run`, a subprocess) with its SMTP
listener on a free port and its relay pointed at an aiosmtpd sink in this process, on a
fresh database (SQLite, or a new database on `--pg`), and feeds it:

* a seeded hostile corpus of `-n` messages (issue 12's fuzz shapes: bare-CR headers,
  duplicate and missing Message-IDs, 5,000-character lines, IDN/SMTPUTF8 senders, broken
  MIME, attached message/rfc822 with long Message-IDs, top-level delivery-status, raw
  8-bit headers, header-injection attempts, a few multi-megabyte messages): most over
  SMTP, some through `mailgated deliver`, some through `mailgated import mbox`;
* then, on the idle daemon, two robots that add no Auto-Submitted/Precedence header, for
  `--robots` seconds: a partner auto-responder and a staff out-of-office rule answering
  every mail they get (neutral texts, so only the loop breaker can stop them);
* forged staff mail: an outsider over SMTP, `From:` a staff address, a forged
  `Authentication-Results` with our trusted authserv-id, commands and text, each naming
  one of 20 existing cases; and address injection attempts on the command line.

Then it waits until the spool is empty and the outbox idle, and prints one line:

    fed=… cases=… quarantined=… duplicates=… lost=… tracebacks=… loop_mails=…
    forged_changes=… injected_recipients=… peak_rss_mb=…

fed: messages the daemon accepted (SMTP 250, deliver exit 0, spooled by import, robot
answers); cases: cases made from them; quarantined: files in spool/quarantine;
duplicates: messages recorded once already (files in spool/duplicate); lost: fed −
stored − duplicates − quarantined (must be 0); tracebacks: in the daemon's log;
loop_mails: mails the relay got for the two robots; forged_changes: forged mails that
changed their case or were relayed; injected_recipients: mails the relay got for an
address that only appeared in injection attempts; peak_rss_mb: the daemon's processes
together (sum of RSS, sampled every 50 ms); stuck_outbound: mails still queued when the
relay had received nothing for 20 s. Exits non-zero when lost, tracebacks,
forged_changes or injected_recipients is not 0.
"""

from __future__ import annotations

import argparse
import email.policy
import email.utils
import mailbox
import os
import quopri
import random
import re
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import free_port, rss_mib, stop, wait_port, write_config  # noqa: E402

from mailgated.cases import Actor, CaseService  # noqa: E402
from mailgated.db import Database  # noqa: E402
from mailgated.directory import Directory  # noqa: E402
from mailgated.intake.spool import Spool  # noqa: E402
from mailgated.models import Case, Outbox, StoredMessage  # noqa: E402

DOMAIN = "torture.example"
SUPPORT, ROBOTS = f"support@{DOMAIN}", f"robots@{DOMAIN}"
BOSS, AWAY = f"boss@{DOMAIN}", f"away@{DOMAIN}"
ROBOT = "robot@partner-robot.example"
AUTHSERV = f"mx.{DOMAIN}"
INJECTED = "injected.example"
FORGED = "FORGED-STAFF-MARKER"


# --- the hostile corpus ---------------------------------------------------------------


def _date(rng: random.Random) -> str:
    return email.utils.formatdate(1_780_000_000 + rng.randrange(10**7))


def _plain(rng: random.Random, n: int, sender: str, mid: str | None, body: str) -> bytes:
    head = [
        f"From: Sender {n} <{sender}>",
        f"To: {SUPPORT}",
        f"Subject: torture {n}",
        f"Date: {_date(rng)}",
    ]
    if mid is not None:
        head.append(f"Message-ID: {mid}")
    head.append("Content-Type: text/plain; charset=utf-8")
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def shape(rng: random.Random, n: int) -> tuple[str, bytes, str]:
    """One hostile message: (shape name, bytes, envelope sender)."""
    sender = f"s{n}@p{n % 97}.example"
    mid = f"<t{n}.{rng.randrange(10**9)}@p{n % 97}.example>"
    kind = rng.choice(SHAPES)
    text = f"Message {n}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(5, 60)))
    if kind == "bare-cr":
        raw = (
            f"Received: from mx.p.example by mx.{DOMAIN}; {_date(rng)}\rFrom: {sender}\r"
            f"Subject: order {n}\rMessage-ID: {mid}\r\r{text}\r"
        ).encode()
    elif kind == "no-message-id":
        raw = _plain(rng, n, sender, None, text)
    elif kind == "long-lines":  # a 5,000-character paragraph, quoted-printable as Gmail sends
        body = quopri.encodestring(((text + " ") * 80)[:5000].encode()).decode()
        raw = _plain(rng, n, sender, mid, body).replace(
            b"charset=utf-8", b"charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        )
    elif kind == "idn":
        sender = f"jürgen{n}@bücher{n % 7}.example"
        raw = _plain(rng, n, sender, mid, "Grüße, " + text)
    elif kind == "broken-mime":
        raw = (
            f"From: {sender}\r\nTo: {SUPPORT}\r\nSubject: broken {n}\r\nMessage-ID: {mid}\r\n"
            'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="never"\r\n\r\n'
            f"--nope\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--never\r\n"
            "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            "JVBERi0x!!!not base64\r\n"
        ).encode()
    elif kind == "rfc822":
        inner = f"<{'A' * 40}{n}=@microsoft.com>"
        raw = (
            f"From: {sender}\r\nTo: {SUPPORT}\r\nSubject: fwd {n}\r\nMessage-ID: {mid}\r\n"
            'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            f"--b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--b\r\n"
            "Content-Type: message/rfc822\r\n\r\n"
            f"From: x@microsoft.com\r\nMessage-ID: {inner}\r\nSubject: inner\r\n"
            f"Thread-Index: {'Q' * 300}\r\n\r\ninner body\r\n--b--\r\n"
        ).encode()
    elif kind == "delivery-status":
        sender = f"MAILER-DAEMON@p{n % 97}.example"
        raw = (
            f"From: {sender}\r\nTo: {SUPPORT}\r\nSubject: Delayed Mail\r\nMessage-ID: {mid}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.p{n}.example\r\n\r\nFinal-Recipient: rfc822; x@y\r\n"
            "Action: delayed\r\nStatus: 4.4.7\r\n"
        ).encode()
    elif kind == "8bit-headers":
        raw = (
            f"From: M\xfcller {n} <{sender}>\r\nTo: {SUPPORT}\r\n"
            f"Subject: Bestellung f\xfcr {n} \xe9t\xe9\r\nMessage-ID: {mid}\r\n\r\n"
        ).encode("latin-1") + f"{text}\r\n".encode()
    elif kind == "injection":
        raw = (
            f"From: =?utf-8?q?Eve=0D=0ABcc=3A_victim{n}@{INJECTED}?= <{sender}>\r\n"
            f"To: {SUPPORT}\r\nBcc: hidden{n}@{INJECTED}\r\n"
            f"Subject: =?utf-8?q?hello=0D=0ABcc=3A_v{n}@{INJECTED}?=\r\n"
            f"Message-ID: {mid}\r\n\r\n{text}\r\n"
        ).encode()
    else:
        raw = _plain(rng, n, sender, mid, text)
    return kind, raw, sender


SHAPES = (
    ["plain"] * 8
    + ["bare-cr", "no-message-id", "long-lines", "idn", "broken-mime", "rfc822"]
    + ["delivery-status", "8bit-headers", "injection"]
)
WORDS = ["order", "invoice", "printer", "broken", "please", "help", "urgent", "Grüße", "ответ"]


def corpus(n: int, seed: int) -> list[tuple[str, bytes, str]]:
    """n messages; about 2 % sent twice as they are, 2 % reusing a Message-ID with other
    content; three huge ones."""
    rng = random.Random(seed)
    found = [shape(rng, i) for i in range(n)]
    for i in rng.sample(range(n), max(1, n // 50)):
        found.append(found[i])  # the very same bytes again
    for i in rng.sample(range(n), max(1, n // 50)):
        kind, raw, sender = found[i]
        if b"Message-ID:" in raw:  # the same Message-ID, other content
            found.append((kind, raw + b"changed\r\n", sender))
    line = "huge " * 15 + "\r\n"
    for k in range(3):  # ~3 MB each
        sender = f"big{k}@huge.example"
        found.append(("huge", _plain(rng, n + k, sender, None, line * 40_000), sender))
    rng.shuffle(found)
    return found


# --- the relay sink and the robots ---------------------------------------------------------


class Sink:
    """The relay: remembers every mail; the robots answer theirs at once."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()
        self.robots_until = 0.0
        self.smtp_port = 0
        self.answered = 0  # robot answers the daemon accepted (they count as fed)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content or envelope.content)
        rcpts = [r.lower() for r in envelope.rcpt_tos]
        with self.lock:
            self.mails.append((rcpts, data))
        if time.monotonic() < self.robots_until and (ROBOT in rcpts or AWAY in rcpts):
            who = ROBOT if ROBOT in rcpts else AWAY
            threading.Thread(target=self.answer, args=(who, data), daemon=True).start()
        return "250 2.0.0 queued"

    def answer(self, who: str, data: bytes) -> None:
        """An auto-responder that adds no Auto-Submitted or Precedence header."""
        got = email.message_from_bytes(data, policy=email.policy.default)
        reply_to = email.utils.parseaddr(str(got["Reply-To"] or got["From"] or ""))[1]
        text = "Thank you, noted." if who == ROBOT else "Received, will look at it."
        subject = " ".join(str(got["Subject"] or "").split())
        raw = (
            f"From: {who}\r\nTo: {reply_to}\r\nSubject: Re: {subject}\r\n"
            f"Message-ID: {email.utils.make_msgid(domain='robots.example')}\r\n"
            f"In-Reply-To: {str(got['Message-ID'] or '').strip()}\r\n\r\n{text}\r\n"
        ).encode()
        try:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as smtp:
                smtp.sendmail(who, [reply_to], raw)
            with self.lock:
                self.answered += 1
        except (OSError, smtplib.SMTPException):
            pass


# --- the run ---------------------------------------------------------------------------------


def mailgated(config: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mailgated", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        check=False,
    )


def directory(db: Database) -> list[tuple[int, str]]:
    """Sections, staff, and 20 cases the forged mail will aim at."""
    with db.session() as session:
        d = Directory(session)
        d.add_user("boss", "Big Boss", BOSS)
        d.add_user("away", "Away Robot", AWAY)
        d.add_section("Support", email=SUPPORT, manager="boss")
        d.add_section("Robots", email=ROBOTS, manager="away")
        service = CaseService(session, Actor.system())
        support = d.section("Support")
        cases = [
            service.create(support, f"Target {i}", "x", email=f"victim{i}@target.example")
            for i in range(20)
        ]
        session.flush()
        return [(c.id, c.email_from or "") for c in cases]


def send(port: int, items: list[tuple[str, bytes, str]], rcpt: str = SUPPORT) -> int:
    """Send over SMTP on one connection (reconnecting after errors); returns 250s."""
    accepted = 0
    smtp: smtplib.SMTP | None = None
    for _kind, raw, sender in items:
        for _ in range(3):
            try:
                if smtp is None:
                    smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
                options = ["SMTPUTF8"] if not sender.isascii() else []
                smtp.sendmail(sender, [rcpt], raw, mail_options=options)
                accepted += 1
                break
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code >= 500:
                    break  # refused for good: not accepted, not counted
                smtp = None
            except (OSError, smtplib.SMTPException):
                smtp = None
                time.sleep(0.2)
    if smtp is not None:
        smtp.quit()
    return accepted


def feed(args: argparse.Namespace, config: Path, port: int, where: Path) -> int:
    """The corpus: 2 % through deliver, 5 % through import, the rest over 4 SMTP sessions."""
    items = corpus(args.n, args.seed)
    by_deliver = items[: len(items) // 50]
    by_import = items[len(by_deliver) : len(by_deliver) + len(items) // 20]
    by_smtp = items[len(by_deliver) + len(by_import) :]
    counts = [0] * 4
    threads = [
        threading.Thread(
            target=lambda k: counts.__setitem__(k, send(port, by_smtp[k::4])), args=(k,)
        )
        for k in range(4)
    ]
    for t in threads:
        t.start()
    fed = 0
    for _, raw, _ in by_deliver:
        done = mailgated(config, "deliver", "--recipient", SUPPORT, stdin=raw)
        fed += done.returncode == 0
    box = mailbox.mbox(where / "archive.mbox")
    for _, raw, _ in by_import:
        box.add(raw)
    box.close()
    done = mailgated(config, "import", "mbox", str(where / "archive.mbox"), "--section",
                     "Support", "--quiet")  # fmt: skip
    found = re.search(rb"spooled (\d+) messages", done.stdout)
    fed += int(found.group(1)) if found else 0
    for t in threads:
        t.join()
    return fed + sum(counts)


def forge(port: int, targets: list[tuple[int, str]]) -> int:
    items = []
    for case_id, _ in targets:
        raw = (
            f"From: Big Boss <{BOSS}>\r\nTo: {SUPPORT}\r\nSubject: Re: [{case_id}] Target\r\n"
            f"Authentication-Results: {AUTHSERV}; dkim=pass header.d={DOMAIN}; dmarc=pass "
            f"header.from={DOMAIN}\r\n"
            f"Message-ID: {email.utils.make_msgid(domain='evil.example')}\r\n\r\n"
            f"#close #priority highest\r\n{FORGED}: all refunded, wire the money.\r\n"
        ).encode()
        items.append(("forged", raw, "attacker@evil.example"))
    return send(port, items)


def cli_injection(config: Path) -> int:
    """Address options given CR/LF and commas: each must be refused (counted if accepted)."""
    tries = [
        ("case", "new", "--section", "Support", "--subject", "x", "--email",
         f"a@x.example\r\nBcc: cli1@{INJECTED}"),
        ("case", "new", "--section", "Support", "--subject", "x", "--email",
         f"a@x.example, cli2@{INJECTED}"),
        ("case", "set", "1", "--watch", f"w@x.example, cli3@{INJECTED}"),
    ]  # fmt: skip
    return sum(mailgated(config, *t).returncode == 0 for t in tries)


def settle(
    db: Database, where: Path, proc: subprocess.Popen[bytes], sink: Sink, timeout: float
) -> int:
    """Until the spool holds nothing to process and the outbox is idle: nothing queued, or
    nothing sent for 20 s (mail the sender cannot deliver); returns the mails still queued."""
    deadline = time.monotonic() + timeout
    quiet, last = 0, (-1, -1)
    while time.monotonic() < deadline:
        waiting = sum(1 for d in ("new", "cur") for _ in (where / "spool" / d).rglob("*")
                      if _.is_file())  # fmt: skip
        with db.session() as session:
            queued = session.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.state == "queued")
            )
        now = (queued or 0, len(sink.mails))
        quiet = quiet + 1 if not waiting and (not queued or now == last) else 0
        last = now
        if quiet >= (5 if not queued else 100):
            return queued or 0
        if proc.poll() is not None:
            sys.exit(f"mailgated run died; see {where / 'daemon.log'}")
        time.sleep(0.2)
    sys.exit(f"not settled in {timeout} s; see {where / 'daemon.log'}")


def run(args: argparse.Namespace, where: Path) -> dict[str, Any]:
    db_url = f"sqlite:///{where / 'torture.db'}"
    if args.pg:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        base = make_url(args.pg)
        name = f"mailgated_torture_{os.getpid()}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        db_url = base.set(database=name).render_as_string(hide_password=False)
    sink = Sink()
    relay_port, smtp_port = free_port(), free_port()
    sink.smtp_port = smtp_port
    controller = Controller(sink, hostname="127.0.0.1", port=relay_port)
    controller.start()
    config = write_config(
        where,
        db_url,
        smtp_port,
        relay_port,
        site="torture",
        hostname=f"mx.{DOMAIN}",
        security=f'trusted_authserv_id = "{AUTHSERV}"\n',
    )
    if mailgated(config, "init").returncode:
        sys.exit(mailgated(config, "init").stderr.decode())
    db = Database(db_url)
    targets = directory(db)
    log = where / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailgated", "--config", str(config), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    peak = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peak[0] = max(peak[0], rss_mib(proc.pid)[0])

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        wait_port(smtp_port, proc, log)
        sampler.start()
        fed = feed(args, config, smtp_port, where)
        fed += forge(smtp_port, targets)
        injected_cli = cli_injection(config)
        settle(db, where, proc, sink, args.timeout)
        # then the robots, on an idle daemon: each answer comes back within a second
        sink.robots_until = time.monotonic() + args.robots
        robot_start = (
            f"From: {ROBOT}\r\nTo: {ROBOTS}\r\nSubject: Where is my order?\r\n"
            f"Message-ID: <start@partner-robot.example>\r\n\r\nPlease answer.\r\n"
        ).encode()
        fed += send(smtp_port, [("robot", robot_start, ROBOT)], rcpt=ROBOTS)
        time.sleep(max(0.0, sink.robots_until - time.monotonic()))
        stuck = settle(db, where, proc, sink, args.timeout)
    finally:
        sampling.set()
        stop(proc)
        controller.stop()
    fed += sink.answered
    with db.session() as session:
        stored = session.scalar(select(func.count()).select_from(StoredMessage)) or 0
        cases = (session.scalar(select(func.count()).select_from(Case)) or 0) - len(targets)
        changed = sum(
            1
            for c in session.scalars(select(Case).where(Case.id.in_([t for t, _ in targets])))
            if c.state != "draft" or c.priority != 3
        )
    db.dispose()
    text = log.read_text(errors="replace")
    counts = Spool(where / "spool").counts()  # spool/duplicate and spool/quarantine
    duplicates, quarantined = counts.get("duplicate", 0), counts.get("quarantined", 0)
    leaks = sum(1 for rcpts, data in sink.mails if FORGED.encode() in data and
                any(r.endswith("@target.example") for r in rcpts))  # fmt: skip
    injected = sum(1 for rcpts, _ in sink.mails for r in rcpts if r.endswith("@" + INJECTED))
    return {
        "fed": fed,
        "cases": cases,
        "quarantined": quarantined,
        "duplicates": duplicates,
        "lost": fed - stored - duplicates - quarantined,
        "tracebacks": text.count("Traceback"),
        "loop_mails": sum(1 for rcpts, _ in sink.mails if ROBOT in rcpts or AWAY in rcpts),
        "forged_changes": changed + leaks,
        "injected_recipients": injected + injected_cli,
        "peak_rss_mb": round(peak[0]),
        "stuck_outbound": stuck,
    }


def drop_database(server: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "mailgated_torture_{os.getpid()}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="messages in the hostile corpus")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--robots", type=float, default=60, help="seconds the loop robots answer")
    ap.add_argument("--pg", metavar="URL", help="PostgreSQL server URL: run there")
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    where = Path(tempfile.mkdtemp(prefix="mailgated-torture-"))
    try:
        figures = run(args, where)
    finally:
        if args.pg:
            drop_database(args.pg)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    if args.keep:
        print(f"work directory: {where}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(where, ignore_errors=True)
    bad = ("lost", "tracebacks", "forged_changes", "injected_recipients")
    sys.exit(1 if any(figures[k] for k in bad) else 0)


if __name__ == "__main__":
    main()
