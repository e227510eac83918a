"""The Composer: every mail we send, from a Jinja2 template and plain strings.

`compose(kind, case, to=[...], context={...}, automatic=bool)` renders the
template `<kind>.txt` (admins override it from `[outbound] templates_dir`, the
shipped ones are in `mailgated/templates/`) and wraps it in the headers every
message of ours carries:

- `From`: the section's display name and address (never a staff member's: that
  would break SPF/DMARC at the partner's side); a forward to staff shows who wrote
  it, "Sylvie Lelitre via Support", still with the section address (`via`, the
  DMARC-safe convention of mailing lists);
- `Reply-To`: the section address with a signed reply token
  (`outbound/tokens.py`), for the staff member when the mail goes to one;
- `Message-ID`: signed, so a reply to it is recognised; `In-Reply-To` and
  `References` so that mail clients thread;
- `Subject`: `[ID] subject`, the seed's tag; `X-Priority` from the case;
- our loop header (`threading.classify.LOOP_HEADER`, the site id), and on
  automatic mail `Auto-Submitted: auto-replied` (an answer to a message) or
  `auto-generated` (RFC 3834).

Headers are built from plain strings with CR/LF folded away (`one_line`): a
parsed header object copied into a new message can write a real header line
(CVE-2024-6923). Messages use the `compat32` policy, which stores header
strings as given and encodes them (RFC 2047) only when flattened: the default
policy parses every header it is handed and costs several times as much.

No line we write is longer than RFC 5322's 998 octets (section 2.1.1), whatever
the text: ASCII text with short lines goes as it is (7bit), ASCII text with a
long line (a 1,700-character paragraph from Gmail or Outlook) goes
quoted-printable, other text in base64; a header that cannot be folded at
spaces (one long word) is written as RFC 2047 encoded words, which can be
split anywhere; an attached message with a long line goes as a file
(`application/octet-stream`, `.eml`), since a `message/rfc822` part must not be
encoded (RFC 2046 5.2.1).
"""

from __future__ import annotations

import email.base64mime
import email.charset
import email.policy
import email.quoprimime
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import encoders
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from typing import Any

import idna
import jinja2

from mailgated.config import Config, OutboundConfig
from mailgated.message.classify import LOOP_HEADER
from mailgated.message.headers import PLAIN_ADDRESS
from mailgated.models import PRIORITY_NAMES, Case
from mailgated.outbound import tokens


class _Policy(email.policy.Compat32):
    """compat32, with our header values folded here rather than by `email.header.Header`.

    compat32 wraps every header in a `Header` to fold and encode it, which was most of
    the cost of flattening our messages (about 140 µs for a Subject with one accented
    letter). Our values are one-line strings (`one_line`), so three cases cover them:
    a short ASCII value is written as it is; a longer ASCII one (References, a From with
    a long name) is folded at its spaces; text that is not ASCII (a Subject) becomes RFC
    2047 encoded words, as compat32 made them. Anything else is left to compat32.
    """

    def fold(self, name: str, value: Any) -> str:
        return self._ours(name, value) or self._short(name, value, super().fold(name, value))

    def fold_binary(self, name: str, value: Any) -> bytes:
        ours = self._ours(name, value)
        if ours:
            return ours.encode("ascii")
        folded = super().fold_binary(name, value)
        if not too_long(folded.decode("ascii", "replace")):
            return folded
        return self._short(name, value, "").encode("ascii")

    def _ours(self, name: str, value: Any) -> str | None:
        """The header line(s) for a one-line string value, or None (compat32 folds it)."""
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            return None
        if not value.isascii():
            try:
                words = encoded_words(value, len(name) + 2, self.linesep)
            except UnicodeEncodeError:  # bytes of an unknown charset (surrogates): compat32's
                return None  # UNKNOWN-8BIT encoded words
            return f"{name}: {words}{self.linesep}"
        if len(name) + len(value) + 2 <= FOLD_AT:
            return f"{name}: {value}{self.linesep}"
        folded = fold_spaces(value, len(name) + 2, self.linesep)
        return f"{name}: {folded}{self.linesep}" if not too_long(folded) else None

    def _short(self, name: str, value: Any, folded: str) -> str:
        """`folded`, or encoded words when a line of it is still over the limit (no spaces
        to fold at); addresses and Message-IDs are never that long, so only text gets here."""
        if folded and not too_long(folded):
            return folded
        words = Header(str(value), "utf-8", header_name=name).encode(linesep=self.linesep)
        return f"{name}: {words}{self.linesep}"


FOLD_AT = 78  # characters a header line should not pass (RFC 5322 2.1.1)
_WORD_FRAME = len("=?utf-8?b??=")


def fold_spaces(value: str, taken: int, linesep: str) -> str:
    """An ASCII value folded at its spaces into lines of at most FOLD_AT characters
    (`taken`: the first line's "Name: "); a word longer than a line stays whole."""
    first, *words = value.split(" ")  # "" between two spaces in a row: both are kept
    lines: list[str] = []
    line, room = first, FOLD_AT - taken
    for word in words:
        if len(line) + 1 + len(word) > room:
            lines.append(line)
            line, room = word, FOLD_AT - 1  # a continuation line starts with its space
        else:
            line = f"{line} {word}"
    lines.append(line)
    return f"{linesep} ".join(lines)


def encoded_words(value: str, taken: int, linesep: str) -> str:
    """`value` as RFC 2047 encoded words in UTF-8, one per line of at most FOLD_AT
    characters (`taken`: the first line's "Name: "), each word whole characters; base64
    or Q, whichever is shorter for the whole value (compat32's choice and folding)."""
    data = value.encode("utf-8")
    b_length = email.base64mime.header_length(data)
    q_length = email.quoprimime.header_length(data)
    base64 = b_length < q_length
    encode = email.base64mime.header_encode if base64 else email.quoprimime.header_encode
    room = FOLD_AT - taken - _WORD_FRAME
    if min(b_length, q_length) <= room:  # most values: one word
        return encode(data, "utf-8")
    words: list[str] = []
    while data:
        cut = _word_end(data, room, base64)
        words.append(encode(data[:cut], "utf-8"))
        data = data[cut:]
        room = FOLD_AT - 1 - _WORD_FRAME  # after the continuation line's space
    return f"{linesep} ".join(words)


def _word_end(data: bytes, room: int, base64: bool) -> int:
    """How many bytes of UTF-8 `data` one encoded word of `room` characters takes: as
    many as fit, back to the end of a character (one character at least)."""
    if base64:
        cut = min(len(data), max(room, 0) // 4 * 3)  # 4 characters for every 3 bytes
    else:
        cut = used = 0
        for byte in data:
            used += _Q_LENGTH[byte]
            if used > room:
                break
            cut += 1
    while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:  # inside a character
        cut -= 1
    if cut == 0:  # not even one character fits: it goes alone
        cut = 1
        while cut < len(data) and data[cut] & 0xC0 == 0x80:
            cut += 1
    return cut


_Q_LENGTH = [email.quoprimime.header_length(bytes([byte])) for byte in range(256)]


POLICY = _Policy()
# kinds of automatic mail that answer a message (RFC 3834 "auto-replied"); others are generated
AUTO_REPLIED = frozenset({"acknowledgement", "unverified", "command_error"})
X_PRIORITY = {1: "1 (Highest)", 2: "2 (High)", 3: "3 (Normal)", 4: "4 (Low)", 5: "5 (Lowest)"}
MAX_REFERENCES = 10
MAX_LINE = 998  # octets, without the CRLF (RFC 5322 2.1.1, RFC 5321 4.5.3.1.6)
MAX_ID = 900  # a longer Message-ID cannot go on one header line: left out of the thread
FALLBACK_ADDRESS = "mailgated@localhost"
REPORT_TYPES = frozenset({"delivery-status", "disposition-notification", "feedback-report"})


def environment(config: OutboundConfig) -> jinja2.Environment:
    """Templates from `outbound.templates_dir` first, then the ones shipped in the package.

    Compiled templates are cached and not re-checked on disk (`auto_reload=False`):
    a changed override takes effect when the daemon restarts.
    """
    loaders: list[jinja2.BaseLoader] = []
    if config.templates_dir:
        loaders.append(jinja2.FileSystemLoader(config.templates_dir))
    loaders.append(jinja2.PackageLoader("mailgated", "templates"))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
    )


def template_problem(env: jinja2.Environment, name: str) -> str | None:
    """Why the template cannot be used, or None (checked when rules are loaded)."""
    try:
        env.get_template(name)
    except jinja2.TemplateNotFound:
        return f"no template named '{name}'"
    except jinja2.TemplateSyntaxError as exc:
        return f"template '{name}' line {exc.lineno}: {exc.message}"
    return None


def one_line(text: str) -> str:
    """Header text with CR/LF and runs of space folded (no header injection)."""
    return " ".join(str(text).split())


def show_address(name: str, address: str) -> str:
    """`Name <address>` for people to read (history, templates): not encoded, one line."""
    name, address = one_line(name), one_line(address)
    return f"{name} <{address}>" if name and address else name or address


@dataclass(frozen=True)
class Attached:
    """A file to attach: one of the case's stored files, or the conversation as text."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class MailCase:
    """What the headers and templates need of a case; rules can build it from a query row."""

    id: int
    subject: str
    state: str
    priority: int
    section: str
    section_email: str
    partner: str | None = None
    email_from: str | None = None
    user: str | None = None

    @classmethod
    def of(cls, case: Case) -> MailCase:
        section = case.section
        return cls(
            id=case.id,
            subject=case.subject,
            state=case.state,
            priority=case.priority,
            section=section.name,
            section_email=section.email or "",
            partner=case.partner.name if case.partner_id and case.partner else None,
            email_from=case.email_from,
            user=case.user.login if case.user_id and case.user else None,
        )

    @property
    def priority_name(self) -> str:
        return PRIORITY_NAMES.get(self.priority, "normal")


class Composer:
    """Renders and wraps our mail; one per daemon (holds the compiled templates)."""

    def __init__(
        self, config: Config, secret: bytes, templates: jinja2.Environment | None = None
    ) -> None:
        self.outbound = config.outbound
        self.secret = secret
        self.templates = templates or environment(config.outbound)
        self.site_id = one_line(config.outbound.site_id or socket.gethostname() or "mailgated")
        self._compiled: dict[str, jinja2.Template] = {}

    def render(self, name: str, context: dict[str, Any]) -> str:
        template = self._compiled.get(name)
        if template is None:
            template = self._compiled[name] = self.templates.get_template(name)
        return template.render(**context)

    def compose(
        self,
        kind: str,
        case: Case | MailCase,
        to: Sequence[str],
        context: dict[str, Any] | None = None,
        *,
        automatic: bool = False,
        cc: Sequence[str] = (),
        token_user: int | None = None,
        token_generation: int = 0,
        in_reply_to: str = "",
        references: Iterable[str] = (),
        attachments: Sequence[Attached] = (),
        subject: str | None = None,
        on_behalf: str = "",
    ) -> EmailMessage:
        """The message of `kind` about `case` to `to`, ready for `outbox.enqueue`.

        `token_user` is the staff member the mail goes to (their replies are then
        verified); `in_reply_to`/`references` thread it under the message it answers;
        `on_behalf` names the person whose mail this passes on (the From display name).
        """
        mail_case = case if isinstance(case, MailCase) else MailCase.of(case)
        body = self.render(f"{kind}.txt", {"case": mail_case, "kind": kind, **(context or {})})
        message = self.headers(
            mail_case,
            to,
            cc=cc,
            subject=subject if subject is not None else mail_case.subject,
            token_user=token_user,
            token_generation=token_generation,
            in_reply_to=in_reply_to,
            references=references,
            on_behalf=on_behalf,
        )
        if automatic:
            message["Auto-Submitted"] = "auto-replied" if kind in AUTO_REPLIED else "auto-generated"
        fill(message, body, attachments)
        return message

    def headers(
        self,
        case: MailCase,
        to: Sequence[str],
        *,
        cc: Sequence[str] = (),
        subject: str,
        token_user: int | None = None,
        token_generation: int = 0,
        in_reply_to: str = "",
        references: Iterable[str] = (),
        on_behalf: str = "",
    ) -> EmailMessage:
        """The headers of a message about `case` (no body yet)."""
        section_address = one_line(case.section_email) or self._fallback()
        domain = one_line(self.outbound.domain) or section_address.rpartition("@")[2]
        token = tokens.reply_token(self.secret, case.id, token_user, token_generation)
        message = EmailMessage(policy=POLICY)
        message["From"] = formataddr((via(on_behalf, case.section), section_address), "utf-8")
        message["Reply-To"] = formataddr(
            (one_line(case.section), tokens.reply_address(section_address, token)), "utf-8"
        )
        message["To"] = ", ".join(ascii_domain(one_line(a)) for a in to)
        if cc:
            message["Cc"] = ", ".join(ascii_domain(one_line(a)) for a in cc)
        message["Subject"] = tagged(case.id, subject)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = tokens.make_message_id(self.secret, case.id, domain)
        thread = [one_line(r) for r in references if r and len(r) <= MAX_ID]
        if in_reply_to and len(in_reply_to) <= MAX_ID:
            message["In-Reply-To"] = one_line(in_reply_to)
            thread.append(one_line(in_reply_to))
        if thread:
            message["References"] = " ".join(list(dict.fromkeys(thread))[-MAX_REFERENCES:])
        message["X-Priority"] = X_PRIORITY.get(case.priority, X_PRIORITY[3])
        message[LOOP_HEADER] = self.site_id
        return message

    def _fallback(self) -> str:
        return f"mailgated@{self.outbound.domain}" if self.outbound.domain else FALLBACK_ADDRESS


def via(author: str, section: str) -> str:
    """The From display name: the section's, or "Sylvie Lelitre via Support" for mail
    passed on from a person (an address in place of a name reads "s.l at agrolait.example",
    so no client mistakes the display name for the sender's address)."""
    author, section = one_line(author).replace("@", " at "), one_line(section)
    return f"{author} via {section}" if author else section


def ascii_domain(value: str) -> str:
    """An address for To/Cc: an internationalised domain as IDNA (`xn--…`, as the envelope
    has it) and a non-ASCII name as an encoded word, so the address itself stays plain (an
    encoded word is not allowed in an address, RFC 2047 section 5)."""
    if PLAIN_ADDRESS.fullmatch(value):  # nearly every address: nothing to change
        return value
    name, address = parseaddr(value)
    local, at, domain = address.rpartition("@")
    if not at:
        return value
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError:
            return value
    if not local.isascii():  # needs SMTPUTF8 and an 8-bit header (RFC 6532): left as it is
        return value
    return formataddr((name, f"{local}@{domain}"), "utf-8")


def tagged(case_id: int, subject: str) -> str:
    """`[ID] subject`, once: a subject that already carries the tag keeps it where it is."""
    subject = one_line(subject)
    tag = f"[{case_id}]"
    return subject if tag in subject else f"{tag} {subject}".strip()


def fill(message: EmailMessage, body: str, attachments: Sequence[Attached] = ()) -> None:
    """Give `message` its text (and attachments: then it is multipart/mixed)."""
    if not attachments:
        message.set_payload(body, _charset(body))
        return
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = "multipart/mixed"
    message.set_payload([])
    message.attach(text_part(body, "plain"))
    for item in attachments:
        message.attach(file_part(item))


def flatten(message: EmailMessage) -> bytes:
    """`message.as_bytes()`: for a message of one text part (most of our mail) its header
    lines and its encoded text, which is what the generator writes, without the generator's
    walk of the message (4 % of processing); others through the generator."""
    payload = message.get_payload()  # the stored text, already encoded
    if message.is_multipart() or not isinstance(payload, str) or not payload.isascii():
        return message.as_bytes()
    policy, linesep = message.policy, message.policy.linesep
    head = b"".join(policy.fold_binary(name, value) for name, value in message.raw_items())
    return head + linesep.encode() + _NEWLINE.sub(linesep, payload).encode("ascii")


_NEWLINE = re.compile(r"\r\n|\r|\n")  # the generator's NLCRE: every line end as linesep


def too_long(text: str) -> bool:
    """Whether a line of `text` is over 998 octets (UTF-8 counts bytes, not characters)."""
    return any(
        len(line.encode("utf-8", "surrogateescape")) > MAX_LINE for line in text.splitlines()
    )


def _charset(text: str) -> email.charset.Charset:
    """us-ascii as it is, or quoted-printable when a line is too long; UTF-8 in base64."""
    if not text.isascii():
        return email.charset.Charset("utf-8")
    charset = email.charset.Charset("us-ascii")
    if too_long(text):
        charset.body_encoding = email.charset.QP
    return charset


def text_part(text: str, subtype: str) -> EmailMessage:
    part = EmailMessage(policy=POLICY)
    part.set_payload(text, _charset(text))
    if subtype != "plain":
        part.set_type(f"text/{subtype}")
    return part


def file_part(item: Attached) -> EmailMessage:
    """One attachment: text as text (in its own charset), anything else in base64."""
    content_type = one_line(item.content_type).lower()
    main, _, sub = content_type.partition("/")
    if not (main and sub) or " " in content_type or ";" in content_type:
        main, sub = "application", "octet-stream"
    if main in ("message", "multipart") and sub != "rfc822":
        # carried as bytes, so not under a type the generator writes as a tree (a top-level
        # message/delivery-status made it raise AttributeError, issue 12 item 6); the
        # report types of RFC 3464/8098/5965 are text
        main, sub = ("text", "plain") if sub in REPORT_TYPES else ("application", "octet-stream")
    if main == "text":
        part = text_part(item.data.decode("utf-8", "replace"), sub)
    elif (main, sub) == ("message", "rfc822") and not too_long(
        item.data.decode("ascii", "replace")
    ):  # RFC 2046 5.2.1: never base64, nested as is
        part = EmailMessage(policy=POLICY)
        part["Content-Type"] = "message/rfc822"
        part.set_payload([email.message_from_bytes(item.data, policy=email.policy.compat32)])
    else:
        if (main, sub) == ("message", "rfc822"):  # a long line: sent as a file, base64
            main, sub = "application", "octet-stream"
            item = Attached(eml_name(item.filename), item.content_type, item.data)
        part = EmailMessage(policy=POLICY)
        part["Content-Type"] = f"{main}/{sub}"
        part.set_payload(item.data)
        encoders.encode_base64(part)
    name = one_line(item.filename) or "attachment"
    part.add_header("Content-Disposition", "attachment", filename=name)  # RFC 2231 if needed
    return part


def eml_name(filename: str) -> str:
    name = one_line(filename) or "message"
    return name if name.lower().endswith(".eml") else f"{name}.eml"
