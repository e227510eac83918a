"""The words automatic mail is written in: out-of-office subjects and sentences, read
receipts, calendar answers — in the languages our partners write.

These are the maintained lists that `classify` reads after the headers (a header is
always the better evidence: many autoresponders add none). `[automatic]` in the
configuration adds subject prefixes and body patterns, or replaces the built-in ones.

- An out-of-office *subject* is a prefix such as "Automatische Antwort:" (Exchange,
  Outlook 365), "Abwesenheitsnotiz:" (Outlook, German), "Réponse automatique :",
  "Out of Office:", "Resposta automática:", "Автоответ:"; alone it is evidence.
- An out-of-office *sentence* ("I am out of the office", "Ich bin bis … nicht im
  Büro", "Je suis absent", "Я в отпуске", "Estou fora do escritório") counts only near
  the top of the text (the first ``BODY_WINDOW`` characters), where a responder puts it.
- A read receipt in text (Exchange's "Read:"/"Gelesen:"/"Lu :"/"Nicht gelesen:") needs
  both its subject prefix and its sentence ("was read on", "wurde am … gelesen"): a
  person may well write a subject "Read: chapter 3".
- A calendar answer's body with Google's "has accepted this invitation" or its footer is
  generated: the person's words are then only the answer's COMMENT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BODY_WINDOW = 600

OUT_OF_OFFICE_SUBJECTS = (
    # English (Exchange/Outlook, Gmail, Apple, Zimbra, Roundcube's managesieve)
    "Automatic reply:", "Auto reply:", "Auto-reply:", "Autoreply:", "Auto Response:",
    "Out of Office:", "Out of office reply:", "Out of Office AutoReply:", "Away:",
    "On vacation:", "Vacation reply:",
    # German
    "Automatische Antwort:", "Abwesenheitsnotiz:", "Abwesenheit:", "Automatische Abwesenheit:",
    "Autom. Antwort:", "Urlaubsabwesenheit:", "Abwesend:",
    # French
    "Réponse automatique :", "Réponse automatique:", "Absence du bureau :", "Absent(e) :",
    "Message d'absence :",
    # Portuguese, Spanish, Italian, Dutch
    "Resposta automática:", "Resposta Automática:", "Ausência temporária:",
    "Respuesta automática:", "Fuera de la oficina:", "Risposta automatica:",
    "Fuori sede:", "Automatisch antwoord:", "Afwezig:",
    # Russian, Polish, Czech, Nordic
    "Автоответ:", "Автоматический ответ:", "Нет на месте:", "Отсутствие на работе:",
    "Automatyczna odpowiedź:", "Automatická odpověď:", "Automatisk svar:",
    "Autosvar:", "Fraværende:", "Frånvarande:",
)  # fmt: skip

OUT_OF_OFFICE_SENTENCES = (
    # the formulas responders use; "I'm on holiday next week, but …" is a person's
    r"\b(i am|i'm|i will be|i shall be)\s+(currently\s+|now\s+)?(out of (the )?office"
    r"|away from (the |my )?(office|desk))",
    r"\b(i am|i'm)\s+currently\s+(away|on (annual |parental |sick )?leave|on vacation"
    r"|on holiday|travelling|abroad)",
    r"\bthis is an? (automatic|automated|auto-generated)(ally generated)? (reply|response"
    r"|message)",
    r"\bthank you for your (e-?mail|message)\.?\s+i am (currently )?(out|away|on)",
    r"\bich bin\s+(derzeit\s+|zurzeit\s+|momentan\s+|aktuell\s+|vom\s.{0,40}?"
    r"|bis\s.{0,40}?)?(nicht im büro|außer haus)",
    r"\bich bin\s+(vom|bis)\s.{0,40}?(abwesend|im urlaub|nicht erreichbar)",
    r"\bdies ist eine automatische (antwort|nachricht|benachrichtigung|abwesenheitsnotiz)",
    r"\bje (suis|serai)\s+(actuellement\s+)?(absente?|en (congés?|vacances|déplacement)"
    r"|hors du bureau)\s+(jusqu'|du |à partir)",
    r"\bceci est (une réponse|un message) automatique",
    r"\bя\s+(сейчас\s+|в настоящее время\s+)?(нахожусь\s+)?(в отпуске|в командировке"
    r"|вне офиса|отсутствую)\s+(до|с|по)\b",
    r"\bэто автоматическ(ий ответ|ое сообщение)",
    r"\b(estou|estarei)\s+(ausente|fora do escritório|de férias|em férias)\s+(até|de|entre)",
    r"\besta é uma (resposta|mensagem) automática",
    r"\bestoy\s+(fuera de la oficina|de vacaciones|ausente)\s+(hasta|del|desde)",
)

# a word every built-in sentence holds: most mail is cleared by these cheap looks
_KEYWORDS = (
    "office", "desk", "away", "leave", "vacation", "holiday", "travelling", "abroad",
    "automat", "büro", "außer haus", "abwesend", "urlaub", "erreichbar", "absent", "congé",
    "vacances", "déplacement", "bureau", "отпуск", "командиров", "офиса", "отсутству",
    "автоматическ", "ausente", "escritório", "férias", "oficina",
)  # fmt: skip

READ_RECEIPT_SUBJECTS = (
    "Read:", "Not read:", "Gelesen:", "Nicht gelesen:", "Lu :", "Lu:", "Non lu :",
    "Non lu:", "Прочитано:", "Не прочитано:", "Lida:", "Lido:", "Não lida:", "Leído:",
    "No leído:", "Letto:", "Gelezen:", "Niet gelezen:", "Läst:", "Przeczytane:",
)  # fmt: skip

READ_RECEIPT_SENTENCES = (
    r"\bwas read on\b",
    r"\bwas deleted without being read\b",
    r"\bwurde am .{0,200}?(gelesen|ungelesen gelöscht)",
    r"\ba été lu le\b",
    r"\ba été supprimé sans avoir été lu\b",
    r"\bбыло прочитано\b",
    r"\bбыло удалено без прочтения\b",
    r"\bfoi lida em\b",
    r"\bfue leído el\b",
)

# Lines a calendar program writes into the body of an answer (never typed by a person).
CALENDAR_GENERATED = (
    r"has (accepted|declined|tentatively accepted) (this|the) invitation",
    r"hat (diese|die) einladung (angenommen|abgelehnt|mit vorbehalt angenommen)",
    r"a (accepté|refusé|accepté provisoirement) (cette|l') ?invitation",
    r"(принял|приняла|отклонил|отклонила)\w* приглашение",
    r"(aceitou|recusou) (este|o) convite",
    r"^invitation from google calendar",
    r"^einladung von google kalender",
    r"^invitation de google agenda",
    r"^forwarding this invitation could allow",
)


def _compile_any(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


def _prefixes(prefixes: tuple[str, ...]) -> re.Pattern[str] | None:
    """A subject starts with one of prefixes (spaces before a colon may vary)."""
    if not prefixes:
        return None
    alternatives = sorted(
        {re.escape(p.rstrip(": ").strip()) for p in prefixes if p.strip()}, key=len, reverse=True
    )
    return re.compile(r"^\s*(" + "|".join(alternatives) + r")\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Patterns:
    """The compiled lists; build one with ``Patterns.build`` (once, at start)."""

    ooo_subject: re.Pattern[str] | None
    ooo_sentence: re.Pattern[str] | None
    ooo_configured: re.Pattern[str] | None
    receipt_subject: re.Pattern[str] | None
    receipt_sentence: re.Pattern[str] | None
    calendar_generated: re.Pattern[str] | None

    @classmethod
    def build(
        cls,
        subject_prefixes: tuple[str, ...] = (),
        body_patterns: tuple[str, ...] = (),
        builtin: bool = True,
    ) -> Patterns:
        """The built-in lists (unless builtin is false) with the configured ones added;
        raises re.error for a body pattern that is no regular expression."""
        subjects = (OUT_OF_OFFICE_SUBJECTS if builtin else ()) + tuple(subject_prefixes)
        return cls(
            ooo_subject=_prefixes(subjects),
            ooo_sentence=_compile_any(OUT_OF_OFFICE_SENTENCES if builtin else ()),
            ooo_configured=_compile_any(tuple(body_patterns)),
            receipt_subject=_prefixes(READ_RECEIPT_SUBJECTS),
            receipt_sentence=_compile_any(READ_RECEIPT_SENTENCES),
            calendar_generated=_compile_any(CALENDAR_GENERATED),
        )

    def out_of_office_subject(self, subject: str) -> str | None:
        found = self.ooo_subject.match(subject) if self.ooo_subject else None
        return found.group(0).strip() if found else None

    def out_of_office_sentence(self, text: str) -> str | None:
        window = text[:BODY_WINDOW]
        found = None
        low = window.lower()
        if self.ooo_sentence and any(word in low for word in _KEYWORDS):  # cheap looks first
            found = self.ooo_sentence.search(window)
        if found is None and self.ooo_configured:
            found = self.ooo_configured.search(window)
        return " ".join(found.group(0).split()) if found else None

    def read_receipt(self, subject: str, text: str) -> bool:
        if self.receipt_subject is None or self.receipt_sentence is None:
            return False
        return bool(self.receipt_subject.match(subject) and self.receipt_sentence.search(text))

    def generated(self, text: str) -> bool:
        """Whether a calendar program wrote this body (Google's "has accepted this
        invitation", "Invitation from Google Calendar"): then nothing in it was typed."""
        return bool(self.calendar_generated and self.calendar_generated.search(text))


DEFAULT_PATTERNS = Patterns.build()
