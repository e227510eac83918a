"""Authentication-Results (RFC 8601): did our own mail server see DKIM/DMARC pass for From?

Only headers whose authserv-id is the configured `[security] trusted_authserv_id`
count, and the receiving MTA must remove such headers arriving from outside
(RFC 8601 section 5: Postfix with OpenDMARC/OpenDKIM and rspamd do). A
`dkim=pass` counts when its signing domain (`header.d`) is the From domain or a
parent of it (relaxed alignment); `dmarc=pass` when its `header.from` is the
From domain.
"""

from __future__ import annotations

import re

_RESULT = re.compile(r"^\s*([a-z0-9_-]+)\s*=\s*([a-z]+)", re.IGNORECASE)
_PROPERTY = re.compile(r"\b(header\.[a-z]+|smtp\.[a-z]+)\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


def _strip_comments(value: str) -> str:
    return re.sub(r"\([^()]*\)", " ", value)


def authenticated(headers: list[str], trusted_id: str, from_domain: str) -> str | None:
    """The evidence ("dkim=pass header.d=…") if a trusted header vouches for the domain."""
    if not trusted_id or not from_domain:
        return None
    trusted_id, from_domain = trusted_id.lower(), from_domain.lower()
    for header in headers:
        serv_id, _, rest = _strip_comments(header).partition(";")
        if serv_id.strip().split(" ")[0].lower() != trusted_id:
            continue
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
