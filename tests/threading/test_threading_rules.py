"""The small policies of threading: subject tags, steering lines, Authentication-Results."""

from __future__ import annotations

import pytest

from mailgated.message.authres import authenticated
from mailgated.threading.match import strip_prefixes, subject_tags
from mailgated.threading.staff_commands import split


@pytest.mark.parametrize(
    ("subject", "tags"),
    [
        ("Re: [101] Problem with the invoice", [101]),
        ("RE[2]: [101] Problem", [101]),
        ("Re(2): [101] Problem", [101]),
        ("Re^2: [101] Problem", [101]),
        ("AW: WG: Fwd: [101] Problem", [101]),
        ("SV: VS: TR: Antw: RV: Enc: Odp: Ynt: [101] x", [101]),
        ("Ответ: Отв: [101] Проблема", [101]),
        ("回复：答复: 转发: [101] 问题", [101]),
        ("[support-list] Re: [101] Problem", [101]),
        ("Problem [101] still there", [101]),
        ("Invoice [2024] and [101]", [2024, 101]),
        ("RE[2]: no tag here", []),
        ("[101]", [101]),
    ],
)
def test_subject_tags(subject: str, tags: list[int]) -> None:
    """Subject tags are found after any reply prefix and list tag."""
    assert subject_tags(subject) == tags


def test_strip_prefixes_keeps_our_tag() -> None:
    """Stripping prefixes keeps our [ID] tag."""
    assert strip_prefixes("Re: [list] FW: [7] Hello") == "[7] Hello"


def test_steering_lines_are_split_from_the_text() -> None:
    """Staff command lines at the top are split from the text."""
    commands, errors, rest = split(
        "\n#pending #priority high\nSet-User: demo\n#watch a@b.example\n\nHello,\n#note later"
    )
    assert [(c.name, c.arg) for c in commands] == [
        ("state", "pending"),
        ("priority", "high"),
        ("assign", "demo"),
        ("watch", "a@b.example"),
    ]
    assert errors == []
    assert rest == "\nHello,\n#note later".lstrip("\n")


def test_a_text_starting_with_a_hash_is_text() -> None:
    """A text starting with '#1' is text, not a command."""
    commands, errors, rest = split("#1 priority for us is the invoice.")
    assert (commands, errors, rest) == ([], [], "#1 priority for us is the invoice.")


def test_bad_short_forms_are_errors() -> None:
    """Unknown or argument-less short forms are errors."""
    commands, errors, _ = split("#close #frobnicate\n#assign\nText")
    assert [c.name for c in commands] == ["state"]
    assert errors == ["#frobnicate: not a command", "#assign: needs an argument"]


TRUSTED = "mx.mycompany.example"


@pytest.mark.parametrize(
    ("header", "domain", "ok"),
    [
        (f"{TRUSTED}; dkim=pass header.d=mycompany.example", "mycompany.example", True),
        (f"{TRUSTED}; dkim=pass (good) header.i=@mycompany.example", "mycompany.example", True),
        (f"{TRUSTED}; dmarc=pass header.from=mycompany.example", "mycompany.example", True),
        (f"{TRUSTED}; dkim=pass header.d=mycompany.example", "sub.mycompany.example", True),
        (f"{TRUSTED}; dkim=fail header.d=mycompany.example", "mycompany.example", False),
        (f"{TRUSTED}; dkim=pass header.d=evil.example", "mycompany.example", False),
        ("mx.evil.example; dkim=pass header.d=mycompany.example", "mycompany.example", False),
        (
            f"{TRUSTED} 1; spf=pass; dmarc=pass header.from=mycompany.example",
            "mycompany.example",
            True,
        ),  # noqa: E501
    ],
)
def test_authentication_results(header: str, domain: str, ok: bool) -> None:
    """Authentication-Results vouches for a domain only from our trusted authserv-id."""
    assert bool(authenticated([header], TRUSTED, domain)) is ok
    assert authenticated([header], "", domain) is None
