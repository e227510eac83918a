"""Mail whose text is packed inside one part, or locked: read what can be read.

- **Opaque-signed S/MIME** (`application/pkcs7-mime; smime-type=signed-data`, Outlook's
  default when "sign" is on and clear-signing is off): the signed MIME entity is inside
  the CMS structure. It is read with `asn1crypto` (a well-kept, pure-Python ASN.1/CMS
  parser) *without verifying* the signature — we show the text, we vouch for nothing.
- **TNEF** (`application/ms-tnef`, `winmail.dat`: Outlook's "rich text" mail with no
  other body): the body (plain, HTML, or compressed RTF made plain with `striprtf`)
  and the attached files are read with `tnefparse` (with `compressed_rtf`).
- **Encrypted mail** (S/MIME enveloped-data, PGP/MIME `multipart/encrypted`, an inline
  `-----BEGIN PGP MESSAGE-----`): cannot be read here. The body becomes one clear note
  (``ENCRYPTED_NOTE``), never the ciphertext; the encrypted part stays as a file, and
  the raw message is stored as received (`mailgated case mail`).
- **Inline PGP signatures** (`-----BEGIN PGP SIGNED MESSAGE-----`): the armor and the
  signature block go, the dash-escaping is undone; the text itself stays.

``unpack`` returns what to read in place of a packed part; ``clear_armor`` cleans a
text. Nothing here raises: a part that cannot be unpacked stays what it was.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

from mailgated.message.structure import check_structure

log = logging.getLogger("mailgated.message")

ENCRYPTED_NOTE = (
    "[An encrypted message ({how}): mailgated cannot read it. The message is kept as "
    "received: `mailgated case mail` gives it back for a mail client that holds the key.]"
)
PACKED_BODY = "X-Mailgated-Packed-Body"  # on the body part made from a TNEF package
_PKCS7 = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_TNEF = ("application/ms-tnef", "application/vnd.ms-tnef")
_SIGNED_ARMOR = re.compile(
    r"^-----BEGIN PGP SIGNED MESSAGE-----[ \t]*\n(?:[A-Za-z-]+:[^\n]*\n)*[ \t]*\n"
    r"(?P<text>.*?)\n?-----BEGIN PGP SIGNATURE-----.*?-----END PGP SIGNATURE-----[ \t]*\n?",
    re.DOTALL | re.MULTILINE,
)
_ENCRYPTED_ARMOR = re.compile(
    r"^-----BEGIN PGP MESSAGE-----.*?(?:-----END PGP MESSAGE-----[ \t]*|\Z)",
    re.DOTALL | re.MULTILINE,
)
_PARSER = BytesParser(policy=policy.default)
_MAX_INNER = (100, 10_000)  # depth, parts: the same caps as the message itself


def is_packed(content_type: str, filename: str) -> bool:
    """Whether a leaf may hold packed content (S/MIME signed or encrypted data, TNEF)."""
    filename = filename.lower()
    return (
        content_type in _PKCS7
        or content_type in _TNEF
        or filename.endswith(".p7m")
        or filename == "winmail.dat"
    )


def unpack(
    part: Message, content_type: str, filename: str, data: bytes
) -> tuple[list[Message], bool] | None:
    """(parts to read in place of `part`, whether to keep `part` itself as a file), or
    None when `part` is no packed content we know. `data`: the part's decoded content."""
    if not data or not is_packed(content_type, filename):
        return None
    if content_type in _TNEF or filename.lower() == "winmail.dat":
        return _tnef(data)
    return _smime(part, data)


def is_packed_body(part: Message) -> bool:
    """Whether part is the body read out of a TNEF package (used only when the mail has
    no text of its own: Outlook often sends both, the same words twice)."""
    return part.get(PACKED_BODY) is not None


def readable_children(part: Message, children: list[Message]) -> list[Message]:
    """What to read of a multipart/encrypted (RFC 1847): the note, then the encrypted
    data as a file (the "Version: 1" identification part is left out)."""
    protocol = str(part.get_param("protocol", "") or "").lower()
    how = "PGP" if "pgp" in protocol else "S/MIME" if "pkcs7" in protocol else protocol or "?"
    files = [c for c in children if c.get_content_type() != protocol]
    return [encrypted_note(how), *files]


def encrypted_note(how: str) -> Message:
    """The note read in place of an encrypted body."""
    return _text_part(ENCRYPTED_NOTE.format(how=how))


def clear_armor(text: str) -> str:
    """text with inline PGP signature armor removed and encrypted blocks replaced by the
    note (the text of a signed block stays, dash-unescaped)."""
    if "-----BEGIN PGP" not in text:
        return text
    text = _SIGNED_ARMOR.sub(lambda m: _unescape(m.group("text")) + "\n", text)
    return _ENCRYPTED_ARMOR.sub(ENCRYPTED_NOTE.format(how="PGP"), text)


def _unescape(text: str) -> str:
    """RFC 4880 7.1: a line starting with "- " had the dash escape added."""
    return "\n".join(line[2:] if line.startswith("- ") else line for line in text.split("\n"))


def _smime(part: Message, data: bytes) -> tuple[list[Message], bool] | None:
    kind = str(part.get_param("smime-type", "") or "").lower()
    try:
        from asn1crypto import cms

        info = cms.ContentInfo.load(data)
        content_type = info["content_type"].native
        if content_type == "signed_data":
            inner = info["content"]["encap_content_info"]["content"].native
            if not isinstance(inner, bytes) or not inner.strip():
                return None
            return [_entity(inner)], False
        if content_type in ("enveloped_data", "authenticated_enveloped_data"):
            return [encrypted_note("S/MIME")], True
    except Exception as exc:  # not CMS after all, or broken: a file like any other
        log.debug("S/MIME part not readable: %s", exc)
        if kind == "enveloped-data":
            return [encrypted_note("S/MIME")], True
    return None


def _entity(raw: bytes) -> Message:
    """The MIME entity inside a signature, parsed under the same caps as a message."""
    check_structure(raw, *_MAX_INNER)
    return _PARSER.parsebytes(raw)


def _tnef(data: bytes) -> tuple[list[Message], bool] | None:
    try:
        from tnefparse import TNEF

        tnef = TNEF(data, do_checksum=False)
    except Exception as exc:  # not TNEF after all: a file like any other
        log.debug("TNEF part not readable: %s", exc)
        return None
    parts: list[Message] = []
    body = _tnef_body(tnef)
    if body is not None:
        body[PACKED_BODY] = "tnef"
        parts.append(body)
    for attachment in tnef.attachments:
        try:
            name = attachment.long_filename() or attachment.name or "attachment"
            content = attachment.data if isinstance(attachment.data, bytes) else b""
        except Exception:  # one unreadable attachment: the others still count
            continue
        parts.append(_file_part(str(name), content))
    return (parts, False) if parts else None


def _tnef_body(tnef: object) -> Message | None:
    """The TNEF body: plain text, else HTML, else the compressed RTF made plain."""
    body = getattr(tnef, "body", None)
    if body:
        return _text_part(_decoded(body))
    html = getattr(tnef, "htmlbody", None)
    if html:
        part = EmailMessage()
        part.set_content(_decoded(html), subtype="html")
        return part
    try:
        rtf = getattr(tnef, "rtfbody", None)
    except Exception:
        return None
    if not rtf:
        return None
    from striprtf.striprtf import rtf_to_text

    try:
        text: str = rtf_to_text(_decoded(rtf), errors="replace")  # type: ignore[no-untyped-call]
        return _text_part(text.strip())
    except Exception as exc:
        log.debug("TNEF RTF body not readable: %s", exc)
        return None


def _decoded(value: object) -> str:
    if isinstance(value, list):
        value = value[0] if value else b""
    if isinstance(value, bytes):
        return value.decode("cp1252", "replace").rstrip("\x00")
    return str(value).rstrip("\x00")


def _text_part(text: str) -> Message:
    part = EmailMessage()
    part.set_content(text)
    return part


def _file_part(name: str, content: bytes) -> Message:
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    maintype, _, subtype = guessed.partition("/")
    part = EmailMessage()
    part.set_content(content, maintype, subtype, filename=name)
    return part
