"""Checking what an admin types: one e-mail address per address option, names without
control characters (issue 12 item 12).

An address given on the command line ends up in headers and SMTP envelopes of
mail we send, so `a@x\\r\\nBcc: victim@y` or `a@x, victim@y` would add
recipients. `one_address` takes exactly one address: no CR, LF, NUL or comma,
exactly one address to `email.utils.getaddresses` (a display name, `Name
<a@x>`, is allowed and dropped), and an addr-spec that the `email-validator`
library accepts — its RFC 5322/6531 syntax check, internationalised domains,
no DNS look-up (the daemon may run where DNS is not the public one). The
domains `localhost` and `.local` and the like are refused: mail we send
there cannot leave through a relay.
"""

from __future__ import annotations

import unicodedata
from email.utils import getaddresses

from email_validator import EmailNotValidError, validate_email

from mailgated.errors import Invalid

FORBIDDEN = {"\r": "CR", "\n": "LF", "\0": "NUL", ",": "a comma"}


def one_address(value: str, what: str = "address") -> str:
    """`value` as one bare e-mail address (domain lowercased), or Invalid with one line."""
    for char, name in FORBIDDEN.items():
        if char in value:
            raise Invalid(f"{what}: {value!r} contains {name}; give exactly one address")
    found = getaddresses([value])
    if len(found) != 1 or not found[0][1]:
        raise Invalid(f"{what}: {value!r} is not one e-mail address")
    address = found[0][1]
    try:
        checked = validate_email(
            address,
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
            allow_smtputf8=True,
        )
    except EmailNotValidError as exc:
        raise Invalid(f"{what}: {address!r} is not a valid e-mail address: {exc}") from None
    return str(checked.normalized)


def clean_name(value: str, what: str = "name") -> str:
    """`value` stripped, refusing control characters (CR, LF, NUL, tabs, escapes…)."""
    bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise Invalid(f"{what}: {value!r} contains a control character ({ord(bad):#04x})")
    return value.strip()


def normalize_address(address: str) -> str:
    """Lower-case and drop plus-addressing: `Support+x@Example.com` → `support@example.com`."""
    address = address.strip().strip("<>").lower()
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address
    return f"{local.split('+', 1)[0]}@{domain}"
