"""lists.as_author(): mail through a list read as its author wrote it."""

from __future__ import annotations

from mailgated.message.lists import as_author, list_addresses, strip_footer
from mailgated.message.parse import parse

HEAD = (
    "List-Id: Partners <partners.lists.example>\r\n"
    "List-Post: <mailto:partners@lists.example>\r\n"
    "To: support@example.com\r\nSubject: [Partners] Belt\r\n"
)


def read(headers: str, body: str = "Belt squeaks.") -> bytes:
    return (headers + HEAD + "\r\n" + body + "\r\n").encode()


def test_list_addresses_come_from_list_post_and_list_id() -> None:
    """The list's own address is known from List-Post and List-Id."""
    assert list_addresses(parse(read("From: a@b.example\r\n"))) == {"partners@lists.example"}


def test_reply_to_names_the_author_when_from_is_the_list() -> None:
    """Mailman 3's DMARC munging: "Name via List" in From, the author in Reply-To."""
    mail = as_author(
        parse(read("From: Ann Lee via Partners <partners@lists.example>\r\n"
                   "Reply-To: Ann Lee <ann@agrolait.example>\r\n")),
        1 << 20,
    )  # fmt: skip
    assert (mail.from_name, mail.from_addr) == ("Ann Lee", "ann@agrolait.example")


def test_reply_to_the_list_is_no_author_but_cc_under_the_via_name_is() -> None:
    """Replies go to the list (Reply-To is the list): the author is the Cc of that name."""
    mail = as_author(
        parse(read("From: Ann Lee via Partners <partners@lists.example>\r\n"
                   "Reply-To: partners@lists.example\r\nCc: Ann Lee <ann@agrolait.example>\r\n")),
        1 << 20,
    )  # fmt: skip
    assert mail.from_addr == "ann@agrolait.example"


def test_from_a_person_is_kept_when_the_list_rewrote_nothing() -> None:
    """A list that leaves From alone: From is the author, Reply-To (the list) is not."""
    mail = as_author(
        parse(read("From: Ann Lee <ann@agrolait.example>\r\nReply-To: partners@lists.example\r\n")),
        1 << 20,
    )
    assert mail.from_addr == "ann@agrolait.example"


def test_footers_are_trimmed_and_ordinary_rules_are_not() -> None:
    """A Mailman or Google Groups footer goes; an underscore line in the text stays."""
    mailman = "Hi.\n_______________________________________________\nPartners mailing list\n"
    assert strip_footer(mailman) == "Hi."
    google = "Hi.\n\n-- \nYou received this because you are subscribed to the Google Groups"
    assert strip_footer(google) == "Hi."
    plain = "Sign here:\n______________\nName, date"
    assert strip_footer(plain) == plain
