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
    assert new_text(text) == expected


def test_inline_answers_keep_their_quotes_and_lose_the_signature() -> None:
    assert new_text(INLINE) == (
        "Answers below.\n\nOn Mon, 3 Mar 2025, Support wrote:\n> 1. Which model is it?\n"
        "LaserJet 4000.\n\n> 2. Since when?\nSince Friday."
    )


def test_forwarded_message_is_new_content_and_stays() -> None:
    assert new_text(FORWARD) == FORWARD.strip()


def test_all_quote_falls_back_to_the_whole_text() -> None:
    text = "On Mon, 3 Mar 2025, Jane wrote:\n> only the quote\n"
    assert new_text(text) == text.strip()
    assert new_text("-- \nJust a signature") == "-- \nJust a signature"


def test_text_without_quotes_is_unchanged() -> None:
    text = "From: the warehouse we heard nothing.\nOn Monday we wrote: nothing.\nBye"
    assert new_text(text) == text
    assert new_text("") == ""


def test_sentence_above_a_wrapped_attribution_stays() -> None:
    text = (
        "Thanks.\nOn Mon, Mar 3, 2025 at 10:00 AM Support Team of Example Corp <\n"
        "support@example.com> wrote:\n> question\n"
    )
    assert new_text(text) == "Thanks."
