"""What we send: signed tokens and Message-IDs, the headers every message carries, templates."""

from __future__ import annotations

import dataclasses
import email
from email.header import decode_header
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

from mailgated.config import Config, OutboundConfig
from mailgated.message.classify import LOOP_HEADER
from mailgated.message.parse import parse
from mailgated.outbound import tokens
from mailgated.outbound.compose import POLICY, Attached, Composer, MailCase, flatten, fold_spaces

SECRET = b"0123456789abcdef0123456789abcdef"
DATA = Path(__file__).parent.parent / "data"
CASE = MailCase(
    id=101,
    subject="Problem with the invoice",
    state="draft",
    priority=2,
    section="Support",
    section_email="support@example.com",
)


def composer(**outbound: object) -> Composer:
    config = Config(outbound=dataclasses.replace(OutboundConfig(site_id="site-1"), **outbound))
    return Composer(config, SECRET)


def reparse(message: EmailMessage) -> EmailMessage:
    return email.message_from_bytes(message.as_bytes(), policy=default)  # type: ignore[return-value]


def test_reply_token_round_trip_survives_lower_and_upper_case() -> None:
    """A reply token reads back in any letter case, for staff and for partners."""
    token = tokens.reply_token(SECRET, 101, 7)
    assert tokens.read_token(SECRET, token) == tokens.Token(101, 7)
    assert tokens.read_token(SECRET, token.upper()) == tokens.Token(101, 7)
    partner = tokens.reply_token(SECRET, 101)
    assert tokens.read_token(SECRET, partner) == tokens.Token(101, None)
    address = tokens.reply_address("support@example.com", token)
    assert tokens.token_in(SECRET, ["other@example.com", address.upper()]) == tokens.Token(101, 7)


def test_forged_or_foreign_tokens_are_not_tokens() -> None:
    """A token changed in user or case, or made with another secret, is no token."""
    token = tokens.reply_token(SECRET, 101, 7)
    assert tokens.read_token(SECRET, token.replace("-u7-", "-u8-")) is None  # another user
    assert tokens.read_token(SECRET, token.replace("101-", "102-")) is None  # another case
    assert tokens.read_token(b"another-secret-another-secret-xx", token) is None
    assert tokens.read_token(SECRET, "vip") is None


def test_message_ids_are_recognised_and_verified() -> None:
    """Our signed Message-IDs read back their case; altered or foreign ones do not."""
    mid = tokens.make_message_id(SECRET, 101, "example.com")
    assert tokens.read_message_id(SECRET, mid) == 101
    assert tokens.read_message_id(SECRET, mid.replace("mg.101.", "mg.102.")) is None
    assert tokens.read_message_id(SECRET, "<abc@example.org>") is None


def test_acknowledgement_headers() -> None:
    """An acknowledgement carries our From, tagged subject, threading and Auto-Submitted headers."""
    message = reparse(
        composer().compose(
            "acknowledgement",
            CASE,
            ["p@partner.example"],
            {"author": "Pat"},
            automatic=True,
            in_reply_to="<m1@partner.example>",
            references=["<m0@partner.example>"],
        )
    )
    assert message["From"] == "Support <support@example.com>"
    reply_to = message["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith("support+101-") and reply_to.endswith("@example.com")
    assert tokens.token_in(SECRET, [reply_to]) == tokens.Token(101, None)
    assert message["To"] == "p@partner.example"
    assert message["Subject"] == "[101] Problem with the invoice"
    assert tokens.read_message_id(SECRET, message["Message-ID"]) == 101
    assert message["In-Reply-To"] == "<m1@partner.example>"
    assert message["References"] == "<m0@partner.example> <m1@partner.example>"
    assert message["X-Priority"] == "2 (High)"
    assert message[LOOP_HEADER] == "site-1"
    assert message["Auto-Submitted"] == "auto-replied"
    assert "opened case 101" in message.get_content()


def test_staff_forward_carries_the_staff_token_and_is_not_automatic() -> None:
    """A forward to staff carries that member's reply token and is not marked automatic."""
    message = reparse(composer().compose("forward", CASE, ["a@example.com"], token_user=7))
    assert tokens.token_in(SECRET, [message["Reply-To"].addresses[0].addr_spec]) == tokens.Token(
        101, 7
    )
    assert message["Auto-Submitted"] is None


def test_inbound_subject_with_encoded_newline_cannot_inject_a_header() -> None:
    """CVE-2024-6923: the subject `hi\\nBcc: victim@…` stays one Subject line."""
    inbound = parse((DATA / "header_injection.eml").read_bytes())
    case = dataclasses.replace(CASE, subject=inbound.subject, section="Sup\r\nBcc: x@evil.example")
    raw = (
        composer()
        .compose(
            "forward",
            case,
            ["a@example.com\r\nBcc: victim@example.com"],
            {"author": inbound.from_name, "text": inbound.text},
            in_reply_to=inbound.message_id,
        )
        .as_bytes()
    )
    header = raw.split(b"\n\n", 1)[0]
    assert b"\nbcc:" not in header.lower()
    assert reparse(composer().compose("forward", case, ["a@example.com"]))["Bcc"] is None


def test_non_ascii_names_subjects_and_file_names_are_encoded() -> None:
    """Non-ASCII names, subjects and file names are encoded and read back exactly."""
    case = dataclasses.replace(
        CASE, subject="Вопрос по счёту 1042", section="Служба поддержки", priority=1
    )
    message = composer().compose(
        "relay",
        case,
        ["Сильвия <s@partner.example>"],
        {"text": "Добрый день!", "author": "Jürgen"},
        attachments=[Attached("Счёт №5.pdf", "application/pdf", b"%PDF-1.4 data")],
    )
    raw = message.as_bytes()
    assert raw.isascii()
    back = reparse(message)
    assert back["Subject"] == "[101] Вопрос по счёту 1042"
    assert back["From"].addresses[0].display_name == "Служба поддержки"
    assert back["X-Priority"] == "1 (Highest)"
    body = back.get_body(("plain",))
    assert body is not None and "Добрый день!" in body.get_content()
    [part] = list(back.iter_attachments())
    assert part.get_filename() == "Счёт №5.pdf"
    assert part.get_content() == b"%PDF-1.4 data"


def test_admin_template_overrides_the_shipped_one(tmp_path: Path) -> None:
    """A template in templates_dir replaces the shipped one of that name only."""
    (tmp_path / "acknowledgement.txt").write_text("Got it: {{ case.id }}\n")
    message = composer(templates_dir=str(tmp_path)).compose(
        "acknowledgement", CASE, ["p@partner.example"], automatic=True
    )
    assert reparse(message).get_content() == "Got it: 101\n"
    copy = composer(templates_dir=str(tmp_path)).compose("copy", CASE, ["w@example.org"])
    assert "watch case 101" in reparse(copy).get_content()  # not overridden: shipped one


def test_an_international_domain_is_written_as_idna_in_to_and_cc() -> None:
    """To/Cc carry `xn--` domains, as the envelope does, not an encoded word."""
    message = composer().compose(
        "acknowledgement", CASE, ["info@bücher.example"], cc=["Jörg <j@straße.example>"]
    )
    raw = message.as_bytes()
    assert b"To: info@xn--bcher-kva.example" in raw
    (cc,) = reparse(message)["Cc"].addresses
    assert (cc.display_name, cc.addr_spec) == ("Jörg", "j@xn--strae-oqa.example")


SUBJECTS = [
    "Принтер на третьем этаже снова зажевал бумагу, и никто не знает, что с ним делать",
    "Imprimante bloquée",
    "発注番号 77 の納品書が届いていません。至急ご確認をお願いいたします。" * 2,
    "Lieferung fehlt 😀 " * 8,
    "a" * 120,  # one long word: no space to fold at
    "Re: Re: Fwd: order 77 " * 6,
]


def test_long_and_non_ascii_headers_are_folded_and_read_back_exactly() -> None:
    """Subjects and References of every kind are folded into lines of at most 78
    characters (a word that cannot be split aside) and a mail client reads back each
    value as it was."""
    references = [f"<order-{n}-0123456789abcdef@agrolait.example>" for n in range(8)]
    for subject in SUBJECTS:
        case = dataclasses.replace(CASE, subject=subject)
        message = composer().compose(
            "acknowledgement", case, ["Sylvie <s@partner.example>"], {},
            in_reply_to="<last@agrolait.example>", references=references,
        )  # fmt: skip
        raw = message.as_bytes()
        head = raw.split(b"\n\n", 1)[0].decode("ascii")
        long_lines = [line for line in head.splitlines() if len(line) > 78]
        # only a word that cannot be split stays longer (encoded words always can be)
        assert all(" " not in w and not w.startswith("=?") for w in map(str.strip, long_lines))
        back = reparse(message)
        assert back["Subject"] == f"[101] {subject}".strip()
        assert back["References"].split() == [*references, "<last@agrolait.example>"]


def test_flatten_writes_what_the_generator_writes() -> None:
    """Our own writing of a one-part mail gives the generator's bytes exactly: ASCII text,
    a long paragraph (quoted-printable), other text (base64), CR/LF line ends, and a
    mail with a file (left to the generator)."""
    texts = ["Hello,\n\nthe boxes.\n", "word " * 400 + "\n", "Добрый день!\r\nСчёт 5\r\n", ""]
    for text in texts:
        for subject in SUBJECTS:
            case = dataclasses.replace(CASE, subject=subject)
            message = composer().compose("relay", case, ["s@partner.example"], {"text": text})
            assert flatten(message) == message.as_bytes()
    files = [Attached("a.txt", "text/plain", b"a\n")]
    message = composer().compose("relay", CASE, ["s@x.example"], {"text": "x"}, attachments=files)
    assert flatten(message) == message.as_bytes()


def test_encoded_words_fit_after_any_header_name() -> None:
    """Even after a header name that leaves no room on its first line, non-ASCII text
    goes as whole encoded words on lines of at most 78 characters and reads back."""
    for name in ("Subject", "X-" + "Long" * 17):  # 70 characters
        for text in SUBJECTS[:4]:
            first, *more = POLICY.fold_binary(name, text).decode("ascii").splitlines()
            assert all(len(line) <= 78 for line in more)
            [(head, _)] = decode_header(first.split(": ", 1)[1])
            assert len(first) <= 78 or len(head.decode()) == 1  # one character on its own
            raw = "\n".join([first, *more]).encode()
            back = email.message_from_bytes(raw + b"\n", policy=default)
            assert back[name] == text


def test_folding_at_spaces_keeps_every_space() -> None:
    """A long ASCII value is folded only before spaces it has, so unfolding it gives it
    back to the character, runs of spaces included (a file name "a  b.pdf" stays so)."""
    for value in [
        "x" * 70 + "  " + "y" * 10,
        'attachment; filename="' + "word " * 20 + ' two  spaces.pdf"',
        " ".join(f"<id{n}@example.com>" for n in range(12)),
    ]:
        folded = fold_spaces(value, len("Content-Disposition: "), "\n")
        assert folded.replace("\n", "") == value
        assert all(len(line) <= 78 for line in folded.split("\n")[1:])
