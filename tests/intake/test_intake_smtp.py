"""SMTP and LMTP listeners with smtplib on an ephemeral port: 250 only when safe on disk."""

from __future__ import annotations

import asyncio
import os
import smtplib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from intake_helpers import break_spool, message, repair_spool

from mailgated.config import ListenConfig
from mailgated.intake.addresses import SectionAddresses
from mailgated.intake.smtp import IntakeHandler, Listener
from mailgated.intake.spool import Envelope, Spool

SECTIONS = {"support@example.com": "Support", "sales@example.com": "Sales"}

Start = Callable[..., "asyncio.Future[Listener]"]


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    running: list[Listener] = []

    async def start(
        protocol: str = "smtp",
        max_size: int = 100_000,
        load: Callable[[], dict[str, str]] = lambda: dict(SECTIONS),
    ) -> Listener:
        book = SectionAddresses(load)
        await book.refresh()
        spool = Spool(tmp_path / "spool")
        listen = ListenConfig(max_message_size=max_size, hostname="mx.test")
        listener = Listener(protocol, "127.0.0.1:0", IntakeHandler(spool, book, protocol), listen)
        await listener.start()
        running.append(listener)
        return listener

    yield start
    for listener in running:
        await listener.stop()


def client(listener: Listener, lmtp: bool = False) -> smtplib.SMTP:
    cls = smtplib.LMTP if lmtp else smtplib.SMTP
    assert listener.port
    conn = cls("127.0.0.1", listener.port, timeout=10)
    return conn


def send_one(listener: Listener) -> None:
    """One message from a@example.org to support@example.com, on its own connection."""
    with client(listener) as smtp:
        smtp.sendmail("a@example.org", ["support@example.com"], message(1))


def spool_of(listener: Listener) -> Spool:
    return listener.handler.spool


async def test_smtp_multiple_recipients_unknown_rejected(started: Callable[..., object]) -> None:
    """Unknown recipients are refused with 550 while the known ones are accepted."""
    listener: Listener = await started()  # type: ignore[misc]

    def send() -> dict[str, tuple[int, bytes]]:
        with client(listener) as smtp:
            return smtp.sendmail(
                "customer@example.org",
                ["support+urgent@example.com", "Sales@Example.com", "nobody@example.com"],
                message(1),
            )

    refused = await asyncio.to_thread(send)
    assert list(refused) == ["nobody@example.com"]
    assert refused["nobody@example.com"][0] == 550
    assert b"not a section address" in refused["nobody@example.com"][1]
    [entry] = spool_of(listener).entries()
    assert entry.envelope.source == "smtp"
    assert entry.envelope.envelope_from == "customer@example.org"
    assert entry.envelope.recipients == ["support+urgent@example.com", "Sales@Example.com"]
    assert entry.envelope.message_id == "<m1@example.org>"


async def test_smtp_all_recipients_unknown(started: Callable[..., object]) -> None:
    """Mail for no known recipient is refused and nothing is spooled."""
    listener: Listener = await started()  # type: ignore[misc]

    def send() -> None:
        with client(listener) as smtp:
            smtp.sendmail("a@example.org", ["x@example.com"], message(1))

    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        await asyncio.to_thread(send)
    assert err.value.recipients["x@example.com"][0] == 550
    assert spool_of(listener).entries() == []


async def test_smtp_bodies_kept_byte_for_byte(started: Callable[..., object]) -> None:
    """SMTP bodies, 8-bit included, are spooled byte for byte."""
    listener: Listener = await started()  # type: ignore[misc]
    eight_bit = message(1, body="Grüße, ça va? Привет").replace(
        b"Subject", b"Content-Type: text/plain; charset=utf-8\r\nSubject"
    )
    latin1 = message(2, body="x").replace(b"Body", "Café déjà vu".encode("latin-1") + b" Body")
    no_id = message(3, message_id=False)
    bare_lf = message(4, eol="\n", body="a line of text\n" * 200)  # > 1000 bytes, no CR

    def send() -> None:
        with client(listener) as smtp:
            for raw in (eight_bit, latin1, no_id, bare_lf):
                smtp.sendmail("<>", ["support@example.com"], raw)

    await asyncio.to_thread(send)
    spool = spool_of(listener)
    entries = spool.entries()
    assert len(entries) == 4
    by_subject = {e.subject: e for e in entries}
    assert spool.read(by_subject["Problem 1"].id) == eight_bit
    assert spool.read(by_subject["Problem 2"].id) == latin1
    made_up = by_subject["Problem 3"]
    assert made_up.envelope.message_id.endswith("@mailgated.invalid>")
    assert spool.read(made_up.id).startswith(
        b"Message-ID: " + made_up.envelope.message_id.encode() + b"\r\n"
    )
    # bytes sent as they are (smtplib only adds the final CRLF before the dot)
    assert spool.read(by_subject["Problem 4"].id) == bare_lf + b"\r\n"
    assert by_subject["Problem 4"].envelope.message_id == "<m4@example.org>"
    assert {e.envelope.envelope_from for e in entries} == {""}  # null sender <>


async def test_smtp_oversized_message(started: Callable[..., object]) -> None:
    """A message over the size limit is refused, declared or not."""
    listener: Listener = await started(max_size=10_000)  # type: ignore[misc]
    big = message(1, body="x" * 20_000)

    def send_declared() -> None:
        with client(listener) as smtp:
            smtp.sendmail("a@example.org", ["support@example.com"], big)

    with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # SIZE= in MAIL FROM
        await asyncio.to_thread(send_declared)
    assert declared.value.smtp_code == 552

    def send_undeclared() -> tuple[int, bytes]:
        with client(listener) as smtp:
            smtp.ehlo()
            smtp.esmtp_features.pop("size", None)  # a client that does not announce SIZE
            smtp.mail("a@example.org")
            smtp.rcpt("support@example.com")
            return smtp.data(big)

    code, _ = await asyncio.to_thread(send_undeclared)
    assert code == 552
    assert spool_of(listener).entries() == []


async def test_smtp_unwritable_spool_answers_451(
    started: Callable[..., object], tmp_path: Path
) -> None:
    """An unwritable spool answers 451, so the sender retries."""
    listener: Listener = await started()  # type: ignore[misc]
    break_spool(tmp_path / "spool")

    with pytest.raises(smtplib.SMTPDataError) as err:
        await asyncio.to_thread(send_one, listener)
    assert err.value.smtp_code == 451
    repair_spool(tmp_path / "spool")
    await asyncio.to_thread(send_one, listener)  # the sender's retry
    assert len(spool_of(listener).entries()) == 1


async def test_smtp_handler_exception_is_451_not_500(started: Callable[..., object]) -> None:
    """An internal error is a 451 with no detail, never a permanent 500."""
    listener: Listener = await started()  # type: ignore[misc]

    def explode(*args: object) -> str:
        raise RuntimeError("internal detail that must not reach the sender")

    spool_of(listener).put = explode  # type: ignore[method-assign]

    with pytest.raises(smtplib.SMTPDataError) as err:
        await asyncio.to_thread(send_one, listener)
    assert err.value.smtp_code == 451
    assert b"internal detail" not in err.value.smtp_error


def lmtp_transaction(listener: Listener, recipients: list[str]) -> list[tuple[int, bytes]]:
    """LHLO, MAIL, RCPT…, DATA and then one reply per accepted recipient (RFC 2033 4.2).

    smtplib.LMTP reads a single DATA reply, so the per-recipient replies are read by hand.
    """
    lmtp = client(listener, lmtp=True)
    lmtp.ehlo_or_helo_if_needed()
    lmtp.mail("a@example.org")
    replies = [lmtp.rcpt(r) for r in recipients]
    accepted = sum(1 for code, _ in replies if code == 250)
    first = lmtp.data(message(1))
    data_replies = [first] + [lmtp.getreply() for _ in range(accepted - 1)]
    lmtp.quit()
    return replies + data_replies


async def test_lmtp_answers_per_recipient(started: Callable[..., object]) -> None:
    """LMTP answers one status per recipient after DATA."""
    listener: Listener = await started("lmtp")  # type: ignore[misc]
    rcpts = ["support@example.com", "sales@example.com", "ghost@example.com"]
    replies = await asyncio.to_thread(lmtp_transaction, listener, rcpts)
    assert [code for code, _ in replies] == [250, 250, 550, 250, 250]
    [entry] = spool_of(listener).entries()  # one file; processing routes by recipient
    assert entry.envelope.recipients == ["support@example.com", "sales@example.com"]
    assert entry.envelope.section is None  # two sections
    assert entry.envelope.source == "lmtp"


async def test_lmtp_one_status_line_per_recipient_on_failure(
    started: Callable[..., object], tmp_path: Path
) -> None:
    """When the spool fails, LMTP answers a temporary status for each recipient."""
    listener: Listener = await started("lmtp")  # type: ignore[misc]
    break_spool(tmp_path / "spool")

    rcpts = ["support@example.com", "sales@example.com"]
    replies = await asyncio.to_thread(lmtp_transaction, listener, rcpts)
    assert [code for code, _ in replies] == [250, 250, 451, 451]


async def test_addresses_kept_when_database_is_down() -> None:
    """The section address list is kept while the database is down."""
    calls = {"n": 0}

    def load() -> dict[str, str]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise ConnectionError("database is down")
        return {"support@example.com": "Support"}

    book = SectionAddresses(load)
    assert await book.refresh()
    assert not await book.refresh()
    assert book.section_for("Support+case-12@example.com") == "Support"

    never = SectionAddresses(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    assert not await never.refresh()
    assert not never.loaded


async def test_smtp_452_when_the_disk_cannot_hold_it(started: Callable[..., object]) -> None:
    """When the disk cannot hold the message, SMTP answers 452."""
    listener: Listener = await started()  # type: ignore[misc]
    listener.handler._free_bytes = lambda: 1000  # type: ignore[method-assign]

    def send() -> None:
        with client(listener) as smtp:
            smtp.sendmail("a@example.org", ["support@example.com"], message(1, body="x" * 2000))

    with pytest.raises(smtplib.SMTPSenderRefused) as err:
        await asyncio.to_thread(send)
    assert err.value.smtp_code == 452


async def test_lmtp_on_a_unix_socket(tmp_path: Path) -> None:
    """LMTP works on a unix socket."""
    book = SectionAddresses(lambda: dict(SECTIONS))
    await book.refresh()
    spool = Spool(tmp_path / "spool")
    socket_path = tmp_path / "lmtp.sock"
    listener = Listener(
        "lmtp", f"unix:{socket_path}", IntakeHandler(spool, book, "lmtp"), ListenConfig()
    )
    await listener.start()
    try:

        def send() -> dict[str, tuple[int, bytes]]:
            lmtp = smtplib.LMTP(str(socket_path))
            refused = lmtp.sendmail("a@example.org", ["support@example.com"], message(1))
            lmtp.quit()
            return refused

        assert await asyncio.to_thread(send) == {}
    finally:
        await listener.stop()
    assert len(spool.entries()) == 1


async def test_smtp_reads_addresses_as_aiosmtpd_does(started: Callable[..., object]) -> None:
    """The listener's quick reading of MAIL and RCPT addresses gives exactly what aiosmtpd's
    own parser gives, for the plain ones it reads and the unusual ones it leaves to it."""
    from aiosmtpd.smtp import SMTP

    listener: Listener = await started()  # type: ignore[misc]
    server = listener._protocol_factory()
    arguments = [
        "<customer@example.org>",
        "<Support+case-12@Example.COM> SIZE=2048 BODY=8BITMIME",
        "<a.b!#$%&'*+/=?^_`{|}~-c@mx-1.example.org>\tSIZE=1",
        "<a@example.org>x",
        "<>",
        '<"john doe"@example.org>',
        "<a@[192.0.2.1]>",
        "<a@example.org> (a comment) SIZE=10",
        "<a@example.org>\x0bSIZE=10",
        "<üser@exämple.org> SMTPUTF8",
        "<@relay.example:a@example.org>",
        "<a..b@example.org>",
        "<a@example.org.>",
        "customer@example.org",
    ]
    for argument in arguments:
        assert server._getaddr(argument) == SMTP._getaddr(server, argument), argument


async def test_smtp_250_after_a_directory_fsync_begun_after_the_rename(
    started: Callable[..., object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages arriving together share fsyncs of new/, and yet each is answered 250 only
    after an fsync of new/ that began once the message was in it."""
    from mailgated.intake import durable

    listener: Listener = await started()  # type: ignore[misc]
    new = tmp_path / "spool" / "new"
    synced: set[str] = set()
    fsyncs: list[str] = []
    real = durable.fsync_dir

    def slow_fsync(path: str) -> None:
        present = set(os.listdir(path))
        time.sleep(0.2)  # a slow disk: the others arrive meanwhile
        real(path)
        fsyncs.append(path)
        synced.update(present)

    monkeypatch.setattr(durable, "fsync_dir", slow_fsync)
    spool = spool_of(listener)
    put = spool.put
    early: list[str] = []

    def checked_put(raw: bytes, envelope: Envelope) -> str:
        spool_id = put(raw, envelope)
        if spool_id not in synced:
            early.append(spool_id)
        return spool_id

    monkeypatch.setattr(spool, "put", checked_put)
    count = 8
    together = threading.Barrier(count)

    failed: list[BaseException] = []

    def send(n: int) -> None:
        try:
            with client(listener) as smtp:
                smtp.ehlo()
                together.wait(timeout=10)
                smtp.sendmail("a@example.org", ["support@example.com"], message(n))
        except BaseException as exc:
            failed.append(exc)

    def send_all() -> None:
        threads = [threading.Thread(target=send, args=(n,)) for n in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    await asyncio.to_thread(send_all)
    assert failed == []
    assert len(os.listdir(new)) == count
    assert early == []
    assert 1 <= len([p for p in fsyncs if Path(p) == new]) < count


class _Capture:
    """A handler that keeps what DATA received (what a listener's handler would spool)."""

    draining = False
    in_data = 0

    def __init__(self) -> None:
        self.got: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.got.append(envelope.original_content)
        return "250 OK"


async def _dialogue(port: int, payload: bytes, piece: int) -> bytes:
    """One transaction with `payload` after the 354, written `piece` bytes at a time; returns
    the server's last reply line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def reply() -> bytes:
            while (line := await reader.readline())[3:4] == b"-":
                pass
            return line

        await reply()
        for command in (b"EHLO client.example", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@x.y>"):
            writer.write(command + b"\r\n")
            await reply()
        writer.write(b"DATA\r\n")
        assert (await reply()).startswith(b"354")
        for at in range(0, len(payload), piece):
            writer.write(payload[at : at + piece])
            await writer.drain()
        return await reply()
    finally:
        writer.close()


async def test_smtp_data_read_in_chunks_as_aiosmtpd_reads_it_line_by_line(
    started: Callable[..., object],
) -> None:
    """The listener's chunked reading of DATA stores the same bytes and gives the same reply
    as aiosmtpd's own line-by-line reading: dot-unstuffing, only <CR><LF>.<CR><LF> ending
    the data, the size limit (552) and the line limit (500), however the bytes arrive."""
    from aiosmtpd.smtp import SMTP

    listener: Listener = await started()  # type: ignore[misc]
    options = dict(listener.options, data_size_limit=3000)
    limits = {"line_length_limit": 1000}
    ours_class = type("Ours", (listener.server_class,), limits)
    theirs_class = type("Theirs", (SMTP,), limits)
    loop = asyncio.get_running_loop()
    ports, handlers, servers = [], [], []
    for cls in (ours_class, theirs_class):
        handler = _Capture()
        server = await loop.create_server(
            lambda cls=cls, handler=handler: cls(handler, **options), "127.0.0.1", 0
        )
        ports.append(server.sockets[0].getsockname()[1])
        handlers.append(handler)
        servers.append(server)
    payloads = [
        b"Subject: x\r\n\r\nbody\r\n.\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"..leading dot\r\n.\r\n",
        b"a\r\n..\r\n.b\r\n...\r\n.\r\n",
        b"end of a sentence.\r\nnext.\r\n.\r\n",
        b"bare LF\n.\r\nstill data\r\n.\r\n",
        b"bare CR\r.\r\nmore\r\n.\r\n",
        b"no final line end.\r\n.\r\n",
        b"x" * 999 + b"\r\n.\r\n",
        b"x" * 1001 + b"\r\n.\r\n",  # a line over line_length_limit: 500
        (b"y" * 98 + b"\r\n") * 30 + b".\r\n",  # 3000 bytes: at the size limit
        (b"y" * 98 + b"\r\n") * 31 + b".\r\n",  # over it: 552
        b"z" * 900 + b"\r\n" + b"z" * 900 + b"\r\n" + b"w" * 1200 + b"\r\n.\r\n",
    ]
    try:
        for payload in payloads:
            for piece in (1, 2, 3, 5, 64, len(payload)):
                ours = await _dialogue(ports[0], payload, piece)
                theirs = await _dialogue(ports[1], payload, piece)
                assert ours == theirs, (payload[:40], piece)
                if ours.startswith(b"250"):
                    assert handlers[0].got[-1] == handlers[1].got[-1], (payload[:40], piece)
    finally:
        for server in servers:
            server.close()
    assert len(handlers[0].got) == len(handlers[1].got) > 0


async def test_smtp_spools_while_every_default_thread_waits_for_the_database(
    started: Callable[..., object],
) -> None:
    """The spool writes on threads of its own: with every thread of the loop's default
    pool held (as the sender's and the status's are by a locked or unreachable
    database), a message still gets its 250 at once."""
    listener: Listener = await started()  # type: ignore[misc]
    loop = asyncio.get_running_loop()
    release = threading.Event()
    held = [loop.run_in_executor(None, release.wait, 60) for _ in range(64)]
    try:
        began = time.monotonic()
        sent = threading.Thread(target=send_one, args=(listener,))
        sent.start()
        while sent.is_alive() and time.monotonic() - began < 20:
            await asyncio.sleep(0.05)
        assert not sent.is_alive(), "no 250 while the default threads were held"
        assert len(spool_of(listener).entries()) == 1
    finally:
        release.set()
        await asyncio.gather(*held)
