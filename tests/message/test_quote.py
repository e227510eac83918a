"""new_text(): what the history shows of a reply, on samples shaped like real clients' mail."""

from __future__ import annotations

import pytest

from mailgated.message.quote import new_text

SIG = "-- "  # the signature delimiter, with its trailing space

OUTLOOK_EN = """\
Hi Anna,

the printer works again, thank you.

Regards
Jane

-----Original Message-----
From: Support <support@example.com>
Sent: Monday, March 3, 2025 10:00 AM
To: Jane Doe <jane@example.com>
Subject: RE: [101] Printer jam

Please reset the tray.
"""

OUTLOOK_DE = """\
Danke, das hat geholfen.

Von: Support <support@example.com>
Gesendet: Montag, 3. März 2025 10:00
An: Jürgen Vogt <j@example.de>
Betreff: AW: [101] Papierstau

Bitte setzen Sie das Fach zurück.
"""

OUTLOOK_RU_WEB = """\
Спасибо, всё заработало.

________________________________
От: Служба поддержки <support@example.com>
Отправлено: 3 марта 2025 г. 10:00
Кому: Ольга Петрова <olga@example.ru>
Тема: RE: [101] Замятие бумаги

Сбросьте, пожалуйста, лоток.
"""

GMAIL_WRAPPED = """\
Yes, the serial is R-432281.

On Mon, Mar 3, 2025 at 10:00 AM Support Team of Example Corp <
support@example.com> wrote:

> Could you send us the serial number?
>
> Best regards,
> Anna
"""

THUNDERBIRD_DE = """\
Die Lieferung ist angekommen.

Am 03.03.2025 um 10:00 schrieb Support:
> Wir haben die Ware heute verschickt.
"""

RUSSIAN_PISHET = """\
Да, счёт получили.

3 марта 2025 г., в 10:00, Иван Петров <ivan@example.ru> пишет:
> Направляем вам счёт.
> --
> Иван
"""

GMAIL_RU_VERBLESS = """\
Спасибо!

пн, 3 мар. 2025 г. в 10:00, Support <support@example.com>:

> Ваша заявка принята.
"""

INLINE = f"""\
Answers below.

On Mon, 3 Mar 2025, Support wrote:
> 1. Which model is it?
LaserJet 4000.

> 2. Since when?
Since Friday.

{SIG}
Jane Doe
ACME
"""

FORWARD = """\
Please look at the complaint below.

---------- Forwarded message ---------
From: Customer <c@example.org>
Date: Mon, 3 Mar 2025 at 09:00
Subject: Broken delivery
To: Jane <jane@example.com>

Two of five boxes arrived damaged.
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (OUTLOOK_EN, "Hi Anna,\n\nthe printer works again, thank you.\n\nRegards\nJane"),
        (OUTLOOK_DE, "Danke, das hat geholfen."),
        (OUTLOOK_RU_WEB, "Спасибо, всё заработало."),
        (GMAIL_WRAPPED, "Yes, the serial is R-432281."),
        (THUNDERBIRD_DE, "Die Lieferung ist angekommen."),
        (RUSSIAN_PISHET, "Да, счёт получили."),
        (GMAIL_RU_VERBLESS, "Спасибо!"),
    ],
)
def test_trailing_earlier_message_is_trimmed(text: str, expected: str) -> None:
    """The quoted earlier message under a reply is trimmed."""
    assert new_text(text) == expected


def test_inline_answers_keep_their_quotes_and_lose_the_signature() -> None:
    """Inline answers keep the quotes they answer and lose the signature."""
    assert new_text(INLINE) == (
        "Answers below.\n\nOn Mon, 3 Mar 2025, Support wrote:\n> 1. Which model is it?\n"
        "LaserJet 4000.\n\n> 2. Since when?\nSince Friday."
    )


def test_forwarded_message_is_new_content_and_stays() -> None:
    """A forwarded message is new content and stays."""
    assert new_text(FORWARD) == FORWARD.strip()


def test_all_quote_falls_back_to_the_whole_text() -> None:
    """A text that is all quote or all signature is kept whole."""
    text = "On Mon, 3 Mar 2025, Jane wrote:\n> only the quote\n"
    assert new_text(text) == text.strip()
    assert new_text("-- \nJust a signature") == "-- \nJust a signature"


def test_text_without_quotes_is_unchanged() -> None:
    """A text without quotes is unchanged."""
    text = "From: the warehouse we heard nothing.\nOn Monday we wrote: nothing.\nBye"
    assert new_text(text) == text
    assert new_text("") == ""


def test_sentence_above_a_wrapped_attribution_stays() -> None:
    """The sentence above a wrapped 'wrote:' line stays."""
    text = (
        "Thanks.\nOn Mon, Mar 3, 2025 at 10:00 AM Support Team of Example Corp <\n"
        "support@example.com> wrote:\n> question\n"
    )
    assert new_text(text) == "Thanks."


BOTTOM = """\
On 06/12/2026 09:55, Support wrote:
> Replace seal S-12.
> Then restart the pump.
>
> --
> Big Boss, Support

Done, it runs again.
"""


def test_bottom_posted_answer_loses_the_whole_quote_above_it() -> None:
    """An answer written under a whole quoted message: the quote goes."""
    assert new_text(BOTTOM) == "Done, it runs again."


def test_short_quote_above_a_short_answer_stays_as_its_question() -> None:
    """One quoted line answered below it is an inline answer: the question stays."""
    text = "> Which serial number?\n\n4711-B\n"
    assert new_text(text) == text.strip()


@pytest.mark.parametrize(
    "line",
    ["Sent from my iPhone", "Von meinem iPhone gesendet", "Отправлено с iPhone",
     "Sent with Proton Mail secure email.", "Get Outlook for Android", "Envoyé de mon iPhone",
     "Enviado do meu iPhone"],
)  # fmt: skip
def test_mobile_signature_lines_end_the_text(line: str) -> None:
    """A mobile client's signature line under the text ends it."""
    assert new_text(f"Fine, thanks.\n\n{line}\n\nMore noise") == "Fine, thanks."
    assert new_text(f"{line}\n") == line  # nothing above: it is all there is


def test_disclaimer_stays_when_no_quote_is_above_it() -> None:
    """A disclaimer under the person's own text (no quote) is left alone: only a quote
    and what the server appended under it are trimmed."""
    text = "Please call me.\n\nThis e-mail is confidential."
    assert new_text(text) == text


def test_our_mail_forwarded_back_is_a_quote_but_others_forwards_stay() -> None:
    """A forward of our own mail (its header names the address the mail came to) is
    trimmed; a forward of somebody else's mail is new and stays."""
    ours = (
        "See below again.\n\n---------- Forwarded message ---------\n"
        "From: Support <support@example.com>\nDate: Mon\n\nOur text\n"
    )
    assert new_text(ours, ["support@example.com"]) == "See below again."
    assert new_text(FORWARD, ["support@example.com"]) == FORWARD.strip()


def test_yahoo_indented_quote_under_an_attribution_goes() -> None:
    """Yahoo indents the quote with spaces instead of ">"."""
    text = "Tuesday suits us.\n\n    On Sunday, Support <s@example.com> wrote:\n \n Old text\n"
    assert new_text(text) == "Tuesday suits us."


def test_a_sentence_that_starts_like_a_mobile_line_stays() -> None:
    """Only a short line naming a device or mail app is a mobile signature."""
    text = "The pump runs.\nVon meinem Kollegen habe ich erfahren, dass es klappt.\nSent with love"
    assert new_text(text) == text


def test_a_pasted_log_quoted_at_the_top_stays() -> None:
    """A ">" block at the top with no attribution and no signature is the person's paste."""
    text = "> ERROR 500\n> at Export.run\n> at Report.build\n> at Main\n\nWhat does this mean?"
    assert new_text(text) == text


def test_the_rule_of_outlook_on_the_web_goes_with_the_block_under_it() -> None:
    """Outlook on the web's <hr>, made text as "* * *", goes with the header block."""
    text = "Danke!\n\n* * *\n\nVon: S <s@example.com>\nGesendet: So\nAn: X\nBetreff: Y\n\nAlt"
    assert new_text(text) == "Danke!"
