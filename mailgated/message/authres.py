"""Authentication-Results (RFC 8601): did our own mail server see DKIM/DMARC pass for From?

Anyone can write an Authentication-Results header, so one is believed only when
all of these hold (RFC 8601 section 5; issue 12 item 11):

1. `[security] trusted_authserv_id` is set and the header carries that authserv-id;
2. it is the *topmost* Authentication-Results header of the message — the one our
   own MTA added last, above whatever the sender wrote (every lower one carrying
   our id is a forgery or stale, and is ignored as if removed);
3. the message came in by a path that only our MTA uses, named in
   `[security] trusted_authres_sources` (default `lmtp`, `deliver`, `imap`, `pop3`).
   The SMTP listener is not in it by default: if it can be reached from outside,
   an outsider can hand it a message whose topmost header is forged.

Then a `dkim=pass` counts when its signing domain (`header.d`) is the From domain or a
parent of it (relaxed alignment); `dmarc=pass` when its `header.from` is the From domain.
"""

from __future__ import annotations

import re

_RESULT = re.compile(r"^\s*([a-z0-9_-]+)\s*=\s*([a-z]+)", re.IGNORECASE)
_PROPERTY = re.compile(r"\b(header\.[a-z]+|smtp\.[a-z]+)\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


def _strip_comments(value: str) -> str:
    return re.sub(r"\([^()]*\)", " ", value)


def believable(
    headers: list[str], source: str, trusted_id: str, sources: tuple[str, ...]
) -> list[str]:
    """The Authentication-Results headers (top first) that may be believed: at most the
    topmost, if it is ours and the message came in by a trusted path."""
    kind = source.partition(":")[0]
    if not trusted_id or not headers or kind not in sources:
        return []
    return headers[:1] if serv_id(headers[0]) == trusted_id.lower() else []


def serv_id(header: str) -> str:
    """The authserv-id of one Authentication-Results value, lowercased."""
    found = _strip_comments(header).partition(";")[0].split()
    return found[0].lower() if found else ""


def authenticated(headers: list[str], trusted_id: str, from_domain: str) -> str | None:
    """The evidence ("dkim=pass header.d=…") if a trusted header vouches for the domain."""
    if not trusted_id or not from_domain:
        return None
    trusted_id, from_domain = trusted_id.lower(), from_domain.lower()
    for header in headers:
        if serv_id(header) != trusted_id:
            continue
        rest = _strip_comments(header).partition(";")[2]
        for resinfo in rest.split(";"):
            found = _evidence(resinfo, from_domain)
            if found:
                return found
    return None


def _evidence(resinfo: str, from_domain: str) -> str | None:
    match = _RESULT.match(resinfo)
    if match is None or match.group(2).lower() != "pass":
        return None
    method = match.group(1).lower()
    props = {k.lower(): v.lower() for k, v in _PROPERTY.findall(resinfo)}
    if method == "dkim":
        domain = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
        if domain and (from_domain == domain or from_domain.endswith("." + domain)):
            return f"dkim=pass header.d={domain}"
    if method == "dmarc" and props.get("header.from") == from_domain:
        return f"dmarc=pass header.from={from_domain}"
    return None
