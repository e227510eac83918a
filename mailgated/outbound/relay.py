"""One SMTP session with the relay: many mails over one connection, each judged per recipient.

The sender (`outbound/sender.py`) keeps a few of these open and hands each one
mail at a time. A session connects on first use (greeting, EHLO, STARTTLS or
TLS, AUTH) and sends `RSET` before a mail when the previous transaction did
not end with the relay's answer to DATA (a refusal left it open) or when the
session has been idle for a second, so a relay that dropped an idle connection
is noticed before a transaction starts. A mail right after a completed one
needs none: the end of DATA resets the session (RFC 5321 4.1.1.4), and a round
trip less per mail is a fifth of the relay's work. Any connection error
closes the session, and the next mail opens a new one.

How replies are read (RFC 5321 4.2.1, 4.2.5):

- a failure to connect, or any reply to the greeting, EHLO, STARTTLS or AUTH
  that is not success, is `RelayDown`: nothing was sent, every mail waits;
- `4xx` at MAIL, RCPT or DATA is temporary: the recipients it concerns wait
  and are retried; `5xx` is permanent for the recipients it concerns (MAIL and
  DATA concern all those accepted, RCPT one);
- the connection lost in the middle of a mail: the mail is tried once more at
  once over a new connection, then waits.

Addresses go as the relay can read them: an internationalised domain as IDNA
(`xn--…`, with the maintained `idna` package, UTS #46 mapping), a non-ASCII
local part with SMTPUTF8 (RFC 6531) when the relay offers it; when it does not,
that recipient is refused here with the reason, and the others still go.
"""

from __future__ import annotations

import ssl
import time

import aiosmtplib
import idna

from mailgated.config import OutboundConfig, host_port
from mailgated.message.headers import PLAIN_ADDRESS
from mailgated.outbound.delivery import Outcome

PROBE_AFTER = 1.0  # seconds idle after which a session is checked with RSET before use


class RelayDown(Exception):
    """The relay could not be reached or would not start a session: nothing was sent."""


class _Lost(Exception):
    """The connection broke in the middle of a mail."""


def reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()


def smtp_address(address: str, smtputf8: bool) -> tuple[str, bool]:
    """`address` as it goes on the wire, and whether it needs SMTPUTF8; ValueError says why
    it cannot go at all."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an address: {address!r}")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"the domain of {address} is not a valid IDN: {exc}") from None
    if local.isascii():
        return f"{local}@{domain}", False
    if not smtputf8:
        raise ValueError(
            f"{address} has a non-ASCII local part and the relay does not offer SMTPUTF8 "
            "(RFC 6531): it cannot be sent through this relay"
        )
    return f"{local}@{domain}", True


class Session:
    """One connection to the relay, reused for mail after mail."""

    def __init__(
        self, config: OutboundConfig, password: str, tls_context: ssl.SSLContext | None
    ) -> None:
        self.config = config
        self.host, self.port = host_port(config.relay, 465 if config.tls else 25)
        self._password = password
        self._tls_context = tls_context
        self._smtp: aiosmtplib.SMTP | None = None
        self._clean = True  # no transaction open: the last one ended with DATA's answer
        self._last_used = 0.0
        self.mails = 0  # mails sent over this connection

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    async def connect(self) -> None:
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.config.tls,
            start_tls=self.config.starttls,
            tls_context=self._tls_context,
            timeout=self.config.timeout,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:  # now, to know the extensions before MAIL
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()
            if self.config.username:
                await smtp.login(self.config.username, self._password)
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise RelayDown(f"relay {self.config.relay}: {exc}") from exc
        self._smtp, self._clean, self.mails = smtp, True, 0
        self._last_used = time.monotonic()

    async def close(self) -> None:
        """QUIT when the connection still works; close it in any case."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.is_connected:
                await smtp.quit(timeout=2)
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            smtp.close()

    def drop(self) -> None:
        """Close at once (after an error, or when stopping with a mail in hand)."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def deliver(self, sender: str, recipients: list[str], raw: bytes) -> Outcome:
        """Send one mail to `recipients`; raises RelayDown when no session can be had."""
        for attempt in (1, 2):
            if not self.connected:
                await self.connect()
            try:
                return await self._transaction(sender, recipients, raw)
            except _Lost as exc:
                self.drop()
                if attempt == 2:
                    return Outcome().defer_all(recipients, str(exc))
        raise AssertionError("unreachable")

    async def _transaction(self, sender: str, recipients: list[str], raw: bytes) -> Outcome:
        smtp = self._smtp
        assert smtp is not None
        outcome = Outcome()
        utf8 = smtp.supports_extension("smtputf8")
        wire: dict[str, str] = {}
        needs_utf8 = False
        for recipient in recipients:
            try:
                wire[recipient], extended = smtp_address(recipient, utf8)
                needs_utf8 |= extended
            except ValueError as exc:
                outcome.refused[recipient] = str(exc)
        try:
            envelope_from, extended = smtp_address(sender, utf8) if sender else ("", False)
        except ValueError as exc:
            return Outcome(refused={r: f"sender {exc}" for r in recipients})
        needs_utf8 |= extended
        if not wire:
            return outcome
        options = ["SMTPUTF8"] if needs_utf8 else []
        if not raw.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        encoding = "utf-8" if needs_utf8 else "ascii"
        try:
            if not self._clean or time.monotonic() - self._last_used > PROBE_AFTER:
                await smtp.rset()
            self._clean = False
            try:
                await _mail(smtp, envelope_from, options, encoding)
            except aiosmtplib.SMTPSenderRefused as exc:
                return self._judge(outcome, list(wire), reply(exc), exc.code)
            accepted = []
            for recipient, address in wire.items():
                try:
                    await _rcpt(smtp, address, encoding)
                    accepted.append(recipient)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    self._judge(outcome, [recipient], reply(exc), exc.code)
            if not accepted:
                return outcome
            try:
                response = await smtp.data(raw)
            except aiosmtplib.SMTPDataError as exc:
                return self._judge(outcome, accepted, reply(exc), exc.code)
        except aiosmtplib.SMTPResponseException as exc:  # RSET refused, 421 at any stage
            raise _Lost(f"relay {self.config.relay}: {reply(exc)}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _Lost(f"relay {self.config.relay}: connection lost: {exc}") from exc
        self.mails += 1
        self._clean, self._last_used = True, time.monotonic()
        answer = f"{response.code} {response.message}".strip()
        outcome.delivered.update(dict.fromkeys(accepted, answer))
        return outcome

    def _judge(self, outcome: Outcome, recipients: list[str], answer: str, code: int) -> Outcome:
        """4xx waits, 5xx is final (RFC 5321 4.2.1); 421 also means the session is over."""
        if code == 421:
            raise _Lost(f"relay {self.config.relay}: {answer}")
        target = outcome.refused if code >= 500 else outcome.deferred
        target.update(dict.fromkeys(recipients, answer))
        return outcome


async def _mail(smtp: aiosmtplib.SMTP, sender: str, options: list[str], encoding: str) -> None:
    """`smtp.mail(sender, …)`, without aiosmtplib's address parsing for a plain address
    (`PLAIN_ADDRESS`, which it would send as it is: its email.utils.parseaddr on each MAIL
    and RCPT address was the largest Python cost of a mail's dialogue)."""
    if not PLAIN_ADDRESS.fullmatch(sender):
        await smtp.mail(sender, options=options, encoding=encoding)
        return
    extra = [option.encode("ascii") for option in options]
    response = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode() + b">", *extra)
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt(smtp: aiosmtplib.SMTP, recipient: str, encoding: str) -> None:
    """`smtp.rcpt(recipient, …)`, without aiosmtplib's address parsing for a plain address."""
    if not PLAIN_ADDRESS.fullmatch(recipient):
        await smtp.rcpt(recipient, encoding=encoding)
        return
    response = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode() + b">")
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
