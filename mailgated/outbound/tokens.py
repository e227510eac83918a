"""Signed reply tokens and Message-IDs: how a reply proves which case (and staff member) it is for.

A reply token is an HMAC (the site secret, `mailgated/secret.py`) over the case ID
and, for mail sent to a staff member, that user's ID and token generation. It
rides in the local part of the Reply-To address, `support+101-u7-k3jz…@example.com`
(`101-u7g2-…` once `mailgated user rotate-token` raised the user's generation to 2),
so any mail client's "Reply" carries it back. The token says which generation it
was issued for; matching refuses one older than the user's current generation, or
one for a disabled user (`threading/match.py`). It is lower-case base32 and digits only: some MTAs
lower-case local parts, and a token must survive that. A forged or mangled
token is simply not a token (the message is matched by weaker evidence).

Our Message-IDs carry the case ID and a MAC too (`<mg.101.<nonce>.<mac>@domain>`),
so a reply whose In-Reply-To names one of them is recognised even when the
outbox row that sent it has been pruned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

MAC_CHARS = 16  # 80 bits of base32 (the patterns below say 16)
_TOKEN = re.compile(r"^(\d{1,12})(?:-u(\d{1,12})(?:g(\d{1,9}))?)?-([a-z2-7]{16})$")
_MESSAGE_ID = re.compile(r"^<?mg\.(\d{1,12})\.([0-9a-f]{12})\.([a-z2-7]{16})@")


@dataclass(frozen=True)
class Token:
    """What a verified reply token says."""

    case_id: int
    user_id: int | None = None
    generation: int = 0  # the user's token generation it was issued for


def _mac(secret: bytes, purpose: str, *fields: object) -> str:
    message = ":".join([purpose, *(str(f) for f in fields)]).encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:10]
    return base64.b32encode(digest).decode("ascii").lower()


def reply_token(
    secret: bytes, case_id: int, user_id: int | None = None, generation: int = 0
) -> str:
    """The token for replies to mail about `case_id` (sent to staff member `user_id`, whose
    token generation is `generation`)."""
    if not user_id:
        return f"{case_id}-{_mac(secret, 'reply', case_id, '')}"
    mac = _mac(secret, "reply", case_id, *_user_fields(user_id, generation))
    tag = f"u{user_id}g{generation}" if generation else f"u{user_id}"
    return f"{case_id}-{tag}-{mac}"


def _user_fields(user_id: int, generation: int) -> tuple[object, ...]:
    # generation 0 signs as tokens did before generations existed: those stay valid
    return (user_id, f"g{generation}") if generation else (user_id,)


def read_token(secret: bytes, text: str) -> Token | None:
    """The verified token in `text` (an address extension), or None."""
    match = _TOKEN.match(text.strip().lower())
    if match is None:
        return None
    case_id = int(match.group(1))
    user_id = int(match.group(2)) if match.group(2) else None
    generation = int(match.group(3)) if match.group(3) else 0
    fields = _user_fields(user_id, generation) if user_id else ("",)
    if not hmac.compare_digest(_mac(secret, "reply", case_id, *fields), match.group(4)):
        return None
    return Token(case_id, user_id, generation)


def reply_address(address: str, token: str) -> str:
    """`support@example.com` + token → `support+<token>@example.com`."""
    local, _, domain = address.rpartition("@")
    local = local.split("+", 1)[0]
    return f"{local}+{token}@{domain}"


def token_in(secret: bytes, addresses: list[str]) -> Token | None:
    """The first verified token among the `+extension`s of these addresses."""
    for address in addresses:
        local = address.rpartition("@")[0]
        _, plus, extension = local.partition("+")
        if plus:
            token = read_token(secret, extension)
            if token is not None:
                return token
    return None


def make_message_id(secret: bytes, case_id: int, domain: str) -> str:
    """A Message-ID we can later recognise as ours and read the case from."""
    nonce = os.urandom(6).hex()
    return f"<mg.{case_id}.{nonce}.{_mac(secret, 'mid', case_id, nonce)}@{domain}>"


def read_message_id(secret: bytes, message_id: str) -> int | None:
    """The case of one of our Message-IDs (MAC checked), or None."""
    match = _MESSAGE_ID.match(message_id.strip().lower())
    if match is None:
        return None
    case_id, nonce, mac = int(match.group(1)), match.group(2), match.group(3)
    if not hmac.compare_digest(_mac(secret, "mid", case_id, nonce), mac):
        return None
    return case_id
