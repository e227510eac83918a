"""The case conversation, end to end: mail in through `mailgated run`'s SMTP listener,
mail out through the relay, the case as `mailgated case show` tells it.

One daemon per engine serves the whole module; every test uses its own partner
addresses and reads case IDs from the mail it gets, so the tests stay independent.
"""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

import pytest
from conversation import STAFF, SUPPORT, World, case_id_of, mail, parsed, reply, serve_module

from mailgated.message.classify import LOOP_HEADER
from mailgated.models import AddressMark, User
from mailgated.outbound import tokens
from mailgated.secret import load_secret

DATA = Path(__file__).parent.parent / "data"
DEMO, BOSS = STAFF["demo"], STAFF["boss"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    yield from serve_module(request, tmp_path_factory, "conversation")


def new_case(world: World, partner: str, subject: str, body: str = "Help!") -> EmailMessage:
    """A partner writes to support@; returns the acknowledgement they get."""
    world.send(mail(partner, SUPPORT, subject, body))
    address = parseaddr(partner)[1]
    return world.wait_for(address, where=lambda m: subject in str(m["Subject"]))[0]


def forwarded(world: World, case_id: int, to: str = BOSS, count: int = 1) -> EmailMessage:
    return world.wait_for(to, count, where=lambda m: f"[{case_id}]" in str(m["Subject"]))[-1]


def kinds(case: dict[str, object]) -> list[str]:
    return [h["kind"] for h in case["history"]]  # type: ignore[attr-defined,index]


def test_the_seed_conversation(world: World) -> None:
    """Partner writes → draft, forward, acknowledgement; staff answers → relayed from
    support@, closed; partner answers → open again, the responsible gets it."""
    partner = "pat@conv1.example"
    ack = new_case(world, f"Pat Partner <{partner}>", "Printer on fire", "It burns.\n")
    case_id = case_id_of(ack)
    assert str(ack["Subject"]) == f"[{case_id}] Printer on fire"
    assert ack["From"].addresses[0].addr_spec == SUPPORT
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack[LOOP_HEADER] == "test-site"
    case = world.case(case_id)
    assert (case["state"], case["email_from"], case["section"]) == ("draft", partner, "Support")
    assert case["history"][-1]["kind"] == "email_in"
    assert case["history"][-1]["body"] == "It burns."

    fwd = forwarded(world, case_id)  # no responsible yet: the section manager
    assert "It burns." in fwd.get_content()
    assert fwd["From"].addresses[0].addr_spec == SUPPORT

    world.send(reply(fwd, f"Big Boss <{BOSS}>", "Please use the extinguisher."))
    answer = world.wait_for(partner, 2)[1]
    assert answer["From"].addresses[0].addr_spec == SUPPORT  # never the staff member's From
    assert answer["From"].addresses[0].display_name == "Support"
    assert "Please use the extinguisher." in answer.get_content()
    assert "It burns" not in answer.get_content()  # the quoted forward is trimmed
    assert answer["Auto-Submitted"] is None
    case = world.case(case_id)
    assert case["state"] == "closed"
    assert kinds(case)[-2:] == ["email_out", "state"]

    world.send(reply(answer, partner, "Still burning."))
    again = forwarded(world, case_id, count=2)
    assert "Still burning." in again.get_content()
    assert world.case(case_id)["state"] == "open"


def test_cc_becomes_watcher_and_gets_copies(world: World) -> None:
    """A Cc on a new case becomes a watcher and gets copies of what follows, not of what it had."""
    partner, colleague = "ann@conv2.example", "bob@conv2.example"
    world.send(mail(partner, SUPPORT, "Need a quote", "Quote please.", cc=colleague))
    ack = world.wait_for(partner)[0]
    case_id = case_id_of(ack)
    assert world.case(case_id)["watchers"] == [colleague]
    assert world.received(colleague) == []  # they had the original by Cc

    fwd = forwarded(world, case_id)
    world.send(reply(fwd, BOSS, "The quote is 100 EUR."))
    copy = world.wait_for(colleague)[0]
    assert "The quote is 100 EUR." in copy.get_content()
    assert copy["From"].addresses[0].addr_spec == SUPPORT

    world.send(reply(world.wait_for(partner, 2)[1], partner, "Accepted."))
    assert "Accepted." in world.wait_for(colleague, 2)[1].get_content()


def test_note_and_pending_commands(world: World) -> None:
    """#note records an internal note and relays nothing; #pending sets the state."""
    partner = "cy@conv3.example"
    case_id = case_id_of(new_case(world, partner, "Slow network"))
    fwd = forwarded(world, case_id)

    world.send(reply(fwd, BOSS, "#note\nI think it is the switch.", quote=False))
    world.settle()
    case = world.case(case_id)
    assert case["state"] == "draft"
    assert case["history"][-1]["kind"] == "note"
    assert case["history"][-1]["body"] == "I think it is the switch."
    assert len(world.received(partner)) == 1  # the acknowledgement only: nothing relayed

    world.send(reply(fwd, BOSS, "#pending #priority high\nWhich switch model do you have?"))
    answer = world.wait_for(partner, 2)[1]
    assert answer.get_content().startswith("Which switch model do you have?")
    assert "#pending" not in answer.get_content()
    assert answer["X-Priority"] == "2 (High)"
    case = world.case(case_id)
    assert (case["state"], case["priority"]) == ("pending", "high")


def test_failed_command_is_answered_to_the_staff_member(world: World) -> None:
    """A failed command is reported to the staff member; the others still run and the text is
    relayed."""
    case_id = case_id_of(new_case(world, "dee@conv4.example", "Broken mouse"))
    fwd = forwarded(world, case_id)
    world.send(reply(fwd, BOSS, "#assign nobody-here #watch it@conv4.example\nNew mouse sent."))
    error = world.wait_for(BOSS, where=lambda m: "failed" in m.get_content())[0]
    assert "#assign nobody-here: no active user with login 'nobody-here'" in error.get_content()
    assert "#watch it@conv4.example: watcher it@conv4.example added" in error.get_content()
    assert world.case(case_id)["watchers"] == ["it@conv4.example"]
    assert "New mouse sent." in world.wait_for("dee@conv4.example", 2)[1].get_content()


def test_forged_staff_from_changes_nothing(world: World) -> None:
    """Mail forging a staff From changes nothing; the real member gets a notice."""
    partner = "eve@conv5.example"
    ack = new_case(world, partner, "Invoice question")
    case_id = case_id_of(ack)
    forged = mail(BOSS, SUPPORT, f"Re: [{case_id}] Invoice question", "#close\nAll refunded!")
    world.send(forged, sender="attacker@evil.example")
    notice = world.wait_for(BOSS, where=lambda m: "not be verified" in m.get_content())[0]
    assert notice["Auto-Submitted"] == "auto-replied"
    case = world.case(case_id)
    assert case["state"] == "draft"
    assert case["history"][-1]["kind"] == "unverified"
    world.settle()
    assert len(world.received(partner)) == 1  # nothing relayed


def test_trusted_authentication_results_verify_staff(world: World) -> None:
    """Our MTA's topmost Authentication-Results, on mail it handed over by LMTP, verifies."""
    partner = "fay@conv6.example"
    case_id = case_id_of(new_case(world, partner, "Password reset"))
    staff_mail = mail(
        BOSS,
        SUPPORT,
        f"Re: [{case_id}] Password reset",
        "Done, check your inbox.",
        headers={
            "Authentication-Results": "mx.mycompany.example; dkim=pass header.d=mycompany.example"
        },
    )
    world.deliver(staff_mail, source="lmtp")
    assert "Done, check your inbox." in world.wait_for(partner, 2)[1].get_content()
    assert world.case(case_id)["state"] == "closed"


FORGED_AR = "mx.mycompany.example; dkim=pass header.d=mycompany.example; dmarc=pass"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("smtp", [FORGED_AR]),  # an outsider straight to our SMTP listener
        ("lmtp", ["mx.mycompany.example; dkim=none", FORGED_AR]),  # below our MTA's own
        ("lmtp", ["mx.other.example; dkim=pass header.d=mycompany.example", FORGED_AR]),
    ],
)
def test_forged_authentication_results_change_nothing(
    world: World, path: str, headers: list[str]
) -> None:
    """A forged Authentication-Results with our authserv-id and From: a staff address sets
    nothing and relays nothing signed by staff, unless it is the topmost header on a
    path only our MTA uses (RFC 8601 section 5, issue 12 item 11)."""
    partner = f"gil-{path}-{len(headers[0])}@conv6b.example"
    ack = new_case(world, partner, "Account locked")
    case_id = case_id_of(ack)
    forged = mail(
        BOSS, SUPPORT, f"Re: [{case_id}] Account locked", "#pending #priority highest\nUnlocked."
    )
    for value in headers:  # in header order: the first is the topmost
        forged["Authentication-Results"] = value
    if path == "smtp":
        world.send(forged, sender="attacker@evil.example")
    else:
        world.deliver(forged, source=path)
    world.wait_for(
        BOSS,
        where=lambda m: (
            f"[{case_id}]" in str(m["Subject"]) and "not be verified" in m.get_content()
        ),
    )
    case = world.case(case_id)
    assert (case["state"], case["priority"]) == ("draft", "normal")
    assert case["history"][-1]["kind"] == "unverified"
    world.settle()
    assert len(world.received(partner)) == 1  # the acknowledgement: nothing relayed


def test_vacation_reply_to_the_acknowledgement_creates_and_sends_nothing(world: World) -> None:
    """A vacation auto-reply to our acknowledgement creates no case and is not answered."""
    partner = "gus@conv7.example"
    ack = new_case(world, partner, "Where is my order")
    case_id = case_id_of(ack)
    before = len(world.cases())
    vacation = reply(ack, partner, "I am on vacation until Monday.")
    vacation["Auto-Submitted"] = "auto-replied"
    world.send(vacation, sender="")
    world.settle()
    assert len(world.cases()) == before
    assert len(world.received(partner)) == 1
    case = world.case(case_id)
    assert case["history"][-1]["kind"] == "automatic"
    assert case["state"] == "draft"


def test_bounce_marks_the_address(world: World) -> None:
    """A bounce of our mail marks the address, and automatic mail to it stops."""
    partner = "hal@conv8.example"
    ack = new_case(world, partner, "Bounce me")
    bounce = (DATA / "bounce_postfix_dsn.eml").read_bytes()
    original = parsed(bounce)
    # make it a bounce of our acknowledgement to this partner
    text = bounce.decode("utf-8", "replace")
    for rcpt in {a for a in _addresses(text)} - {SUPPORT}:
        text = text.replace(rcpt, partner)
    text = text.replace(_first_message_id(text, original), str(ack["Message-ID"]))
    world.send(text.encode(), rcpt=[SUPPORT], sender="")
    world.settle()
    rows = world.mg("case", "show", str(case_id_of(ack)), "--json").json()["history"]
    assert rows[-1]["kind"] == "automatic"
    with world.db.session() as session:
        marks = {m.email for m in session.query(AddressMark)}
    assert partner in marks


def _addresses(text: str) -> set[str]:
    import re

    return set(re.findall(r"[\w.+-]+@[\w.-]+\.\w+", text))


def _first_message_id(text: str, message: EmailMessage) -> str:
    import re

    ids = re.findall(r"<[^<>\s]+@[^<>\s]+>", text)
    own = str(message["Message-ID"])
    return next(i for i in ids if i != own)


def test_same_message_twice_is_recorded_once(world: World) -> None:
    """The same message delivered twice (another Received line) is recorded once."""
    partner = "ida@conv9.example"
    message = mail(partner, SUPPORT, "Twice delivered")
    world.send(message)
    ack = world.wait_for(partner)[0]
    raw = b"Received: from relay2.example by mx; Mon, 1 Dec 2026 10:00:00 +0000\r\n"
    world.send(raw + message.as_bytes(), rcpt=[SUPPORT], sender=partner)
    world.settle()
    case = world.case(case_id_of(ack))
    assert kinds(case).count("email_in") == 1
    assert [c["subject"] for c in world.cases()].count("Twice delivered") == 1
    assert len(world.received(partner)) == 1


def test_stranger_naming_a_case_gets_a_new_case(world: World) -> None:
    """A stranger naming someone else's case in the subject gets a new case that mentions it."""
    owner_case = case_id_of(new_case(world, "jo@conv10.example", "My own problem"))
    stranger = "kim@elsewhere.example"
    world.send(mail(stranger, SUPPORT, f"Re: [{owner_case}] My own problem", "Me too!"))
    ack = world.wait_for(stranger)[0]
    new_id = case_id_of(ack)
    assert new_id != owner_case
    assert f"mentioned case {owner_case}" in ack.get_content()
    new = world.case(new_id)
    assert any(f"mentioned case {owner_case} (its subject)" in h["body"] for h in new["history"])
    assert kinds(world.case(owner_case)).count("email_in") == 1


def test_stranger_quoting_a_case_s_message_ids_gets_a_new_case(world: World) -> None:
    """A sender from an unrelated domain who answers the partner's mail (In-Reply-To,
    References) is not joined to that case: a new case that says which case it mentioned."""
    owner = "nat@conv22.example"
    ack = new_case(world, owner, "Private matter")
    owner_case = case_id_of(ack)
    stranger = "oli@unrelated22.example"
    sneaky = reply(ack, stranger, "Please send me the details.", quote=False)
    sneaky.replace_header("Subject", "Re: details")  # no tag: only the headers point there
    sneaky.replace_header("To", SUPPORT)
    world.send(sneaky)
    new_ack = world.wait_for(stranger)[0]
    new_id = case_id_of(new_ack)
    assert new_id != owner_case
    assert f"mentioned case {owner_case}" in new_ack.get_content()
    new = world.case(new_id)
    assert new["email_from"] == stranger
    assert any(
        f"mentioned case {owner_case} (the Message-IDs it answers)" in h["body"]
        for h in new["history"]
    )
    assert kinds(world.case(owner_case)).count("email_in") == 1
    world.settle()
    assert len(world.received(owner)) == 1  # the owner got their acknowledgement only


def test_colleague_of_the_partner_quoting_our_mail_joins_as_non_participant(
    world: World,
) -> None:
    """A colleague at the partner's own domain answering our mail is recorded on the case
    and forwarded to the responsible, but never sent to the partner and changes no state."""
    partner = "pia@conv23.example"
    ack = new_case(world, partner, "Server room access")
    case_id = case_id_of(ack)
    fwd = forwarded(world, case_id)
    world.send(reply(fwd, BOSS, "Access granted."))
    world.wait_for(partner, 2)
    assert world.case(case_id)["state"] == "closed"
    colleague = "quin@conv23.example"
    note = reply(ack, colleague, "I am Pia's colleague: also for me please?", quote=False)
    note.replace_header("Subject", "Re: access")
    note.replace_header("To", SUPPORT)
    world.send(note)
    forwarded_note = forwarded(world, case_id, count=2)
    assert "also for me please?" in forwarded_note.get_content()
    case = world.case(case_id)
    assert case["state"] == "closed"  # no reopening
    assert case["history"][-1]["kind"] == "email_in"
    assert case["history"][-1]["email_from"].endswith(colleague)
    world.settle()
    assert len(world.received(partner)) == 2  # acknowledgement and the staff answer only


def test_someone_else_at_the_partners_public_mail_provider_is_a_stranger(
    world: World,
) -> None:
    """A partner writing from a public mail provider shares that domain with strangers:
    another gmail.com address quoting the case's Message-IDs gets a case of its own that
    names this one, and nothing of it reaches this case or the partner."""
    partner = "rita.conv40@gmail.com"
    ack = new_case(world, partner, "Cracked screen")
    case_id = case_id_of(ack)
    other = "sam.conv40@gmail.com"
    note = reply(ack, other, "Same here, what did they say?", quote=False)
    note.replace_header("Subject", "Re: screen")
    note.replace_header("To", SUPPORT)  # only the quoted Message-IDs point at the case
    world.send(note)
    new_ack = world.wait_for(other)[0]
    assert case_id_of(new_ack) != case_id
    assert f"mentioned case {case_id}" in new_ack.get_content()
    assert kinds(world.case(case_id)).count("email_in") == 1
    world.settle()
    assert len(world.received(partner)) == 1  # the acknowledgement only


def test_our_reply_token_from_another_address_at_a_public_provider_changes_nothing(
    world: World,
) -> None:
    """Someone else at the partner's public mail provider answering our mail with its reply
    token (the partner forwarded it) is no colleague: recorded on the case as a
    non-participant, the closed case stays closed and the partner gets nothing."""
    partner = "tess.conv41@gmail.com"
    ack = new_case(world, partner, "Lost parcel")
    case_id = case_id_of(ack)
    world.send(reply(forwarded(world, case_id), BOSS, "Found it, on its way."))
    world.wait_for(partner, 2)
    assert world.case(case_id)["state"] == "closed"
    other = "uma.conv41@gmail.com"
    world.send(reply(ack, other, "Not received yet!", quote=False))  # to our tokened address
    forwarded_note = forwarded(world, case_id, count=2)
    assert "Not received yet!" in forwarded_note.get_content()
    case = world.case(case_id)
    assert case["state"] == "closed"  # a partner's answer would have reopened it
    assert case["history"][-1]["email_from"].endswith(other)
    world.settle()
    assert len(world.received(partner)) == 2  # acknowledgement and the staff answer only


@pytest.mark.parametrize(
    "prefix", ["RE[2]: ", "Re(2): ", "Re^2: ", "AW: WG: ", "Ответ: ", "回复：", "[list] SV: "]
)
def test_reply_prefixes_and_list_tags(world: World, prefix: str) -> None:
    """Replies with any prefix or list tag before [ID] join their case."""
    partner = f"lee{abs(hash(prefix)) % 10000}@conv11.example"
    case_id = case_id_of(new_case(world, partner, "Prefix test"))
    world.send(mail(partner, SUPPORT, f"{prefix}[{case_id}] Prefix test", "More info."))
    fwd = forwarded(world, case_id, count=2)
    assert "More info." in fwd.get_content()


def send_file(world: World, name: str) -> EmailMessage:
    """Send one of tests/data's real-world mails to support@; returns its forward to staff."""
    raw = (DATA / name).read_bytes()
    before = len(world.received(BOSS))
    world.send(raw, rcpt=[SUPPORT], sender=parsed(raw)["From"].addresses[0].addr_spec)
    return world.wait_for(BOSS, before + 1)[-1]


@pytest.mark.parametrize("name", ["ru_cp1251_declared.eml", "ru_koi8r_declared.eml"])
def test_russian_mail_reads_correctly_in_case_show(world: World, name: str) -> None:
    """Russian mail in any common charset reads right in the forward and in case show."""
    fwd = send_file(world, name)
    assert str(fwd["Subject"]).endswith("] Вопрос по счёту 1042")
    shown = world.mg("case", "show", str(case_id_of(fwd))).out
    assert "Вопрос по счёту 1042" in shown
    assert "Прошу проверить счёт 1042: сумма не совпадает с договором." in shown
    assert "Ольга Петрова" in world.case(case_id_of(fwd))["history"][-1]["email_from"]


def test_html_only_mail_reads_as_text(world: World) -> None:
    """HTML-only mail is recorded as readable text."""
    fwd = send_file(world, "html_only_outlook.eml")
    entry = world.case(case_id_of(fwd))["history"][-1]
    assert entry["kind"] == "email_in"
    assert entry["body"].startswith("Hello,\n\norder 4711 has not arrived.")
    assert "<p" not in fwd.get_content()


def test_forwarded_chain_keeps_the_forwarded_mail(world: World) -> None:
    """A forwarded message keeps the forwarder's words as text and the original as a file."""
    fwd = send_file(world, "forwarded_rfc822.eml")
    case = world.case(case_id_of(fwd))
    assert case["subject"] == "Fwd: Broken delivery"
    assert case["history"][-1]["body"] == "Please see the attached complaint."
    [part] = list(fwd.iter_attachments())
    assert part.get_filename() == "forwarded.eml"
    [inner] = part.get_payload()
    assert inner["Message-ID"] == "<orig-complaint@customer.example>"
    assert inner.get_content().strip() == "Two of five boxes arrived damaged."


def test_attachments_with_non_ascii_names_reach_staff_and_partner(world: World) -> None:
    """Attachments with non-ASCII names reach staff and, with the reply, the partner."""
    partner = "mia@conv12.example"
    message = mail(partner, SUPPORT, "Scan attached", "See the scan.")
    message.add_attachment(b"%PDF-1.4 scan", "application", "pdf", filename="Счёт №5.pdf")
    world.send(message)
    case_id = case_id_of(world.wait_for(partner)[0])
    fwd = forwarded(world, case_id)
    [part] = list(fwd.iter_attachments())
    assert (part.get_filename(), part.get_content()) == ("Счёт №5.pdf", b"%PDF-1.4 scan")

    answer = reply(fwd, BOSS, "Corrected invoice attached.")
    fixed = "Счёт №5 (исправлен).pdf"
    answer.add_attachment(b"%PDF-1.4 fixed", "application", "pdf", filename=fixed)
    world.send(answer)
    relayed = world.wait_for(partner, 2)[1]
    [part] = list(relayed.iter_attachments())
    assert part.get_filename() == fixed
    assert part.get_content() == b"%PDF-1.4 fixed"


def test_header_injection_subject_writes_no_bcc_anywhere(world: World) -> None:
    """A subject with an encoded line break adds no Bcc to any mail we send."""
    raw = (DATA / "header_injection.eml").read_bytes()
    raw = raw.replace(b"x@evil.example", b"x@conv13.example")
    world.send(raw, rcpt=[SUPPORT], sender="x@conv13.example")
    ack = world.wait_for("x@conv13.example")[0]
    case_id = case_id_of(ack)
    forwarded(world, case_id)
    sent = [r for r in world.received() if f"[{case_id}]" in str(r.message["Subject"])]
    assert len(sent) == 2
    for item in sent:
        head = item.data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
        assert b"\nbcc:" not in head
        assert "victim@example.com" not in item.rcpt_tos


def test_forward_shows_the_partner_via_the_section(world: World) -> None:
    """A forward to staff reads "Sylvie Lelitre via Support" in their inbox, sent from the
    section address (DMARC-safe); a sender without a name shows the address, made harmless."""
    case_id = case_id_of(new_case(world, "Sylvie Lelitre <s.l@conv21.example>", "Via check"))
    fwd = forwarded(world, case_id)
    assert fwd["From"].addresses[0].display_name == "Sylvie Lelitre via Support"
    assert fwd["From"].addresses[0].addr_spec == SUPPORT
    bare = case_id_of(new_case(world, "nameless@conv21.example", "Via bare"))
    fwd = forwarded(world, bare)
    assert fwd["From"].addresses[0].display_name == "nameless at conv21.example via Support"
    assert fwd["From"].addresses[0].addr_spec == SUPPORT


def test_forward_reply_token_is_issued_to_the_staff_member(world: World) -> None:
    """The reply token in a forward is issued to the staff member it goes to."""
    case_id = case_id_of(new_case(world, "ned@conv14.example", "Token check"))
    fwd = forwarded(world, case_id)
    token = tokens.token_in(load_secret(world.config), [fwd["Reply-To"].addresses[0].addr_spec])
    with world.db.session() as session:
        boss = session.query(User).filter_by(login="boss").one()
        assert token == tokens.Token(case_id, boss.id)


def test_case_reply_sends_partner_and_historizes(world: World) -> None:
    """`case reply` mails the partner from the section, signed by the staff user, and closes
    the case like a reply by mail does."""
    partner = "ola@conv15.example"
    case_id = case_id_of(new_case(world, partner, "CLI reply"))
    done = world.mg("case", "reply", str(case_id), "We are on it.", as_user="demo")
    assert done.out.strip() == f"case {case_id}: reply queued for {partner}, closed"
    answer = world.wait_for(partner, 2)[1]
    assert answer["From"].addresses[0].addr_spec == SUPPORT
    assert "We are on it." in answer.get_content()
    assert "Demo User" in answer.get_content()
    case = world.case(case_id)
    assert case["state"] == "closed"
    assert [(h["kind"], h["author"]) for h in case["history"][-2:]] == [
        ("email_out", "demo"),
        ("state", "demo"),
    ]


def test_case_reply_needs_a_staff_user(world: World) -> None:
    """Without --as or $MAILGATED_USER, `case reply` says so in one line and sends nothing."""
    partner = "oda@conv22.example"
    case_id = case_id_of(new_case(world, partner, "Who signs?"))
    refused = world.mg("case", "reply", str(case_id), "Anonymous answer.", ok=False)
    assert (refused.code, refused.err.strip()) == (
        1,
        "mailgated: error: mail to a partner needs a staff user:"
        " give --as LOGIN or set $MAILGATED_USER",
    )
    case = world.case(case_id)
    assert (case["state"], case["history"][-1]["kind"]) == ("draft", "email_in")


def test_case_reply_keeps_the_case_open_when_the_section_says_so(world: World) -> None:
    """With close_on_staff_reply=off, `case reply` leaves the state alone (as mail does);
    the text may come from stdin, like `case note ID -`."""
    partner = "oli@conv23.example"
    case_id = case_id_of(new_case(world, partner, "Keep it open"))
    world.mg("section", "set", "Support", "--policy", "close_on_staff_reply=off")
    try:
        world.mg("case", "reply", str(case_id), "-", as_user="demo", stdin=b"From stdin.\n")
    finally:
        world.mg("section", "set", "Support", "--policy", "close_on_staff_reply=on")
    assert "From stdin." in world.wait_for(partner, 2)[1].get_content()
    world.mg("case", "note", str(case_id), "-", as_user="demo", stdin="Zwei\nZeilen ü\n".encode())
    case = world.case(case_id)
    assert case["state"] == "draft"
    assert case["history"][-1]["body"] == "Zwei\nZeilen ü"


def test_relays_thread_under_the_partners_mail(world: World) -> None:
    """The partner's client threads our answers under their own mail, even when the staff
    member's client named only our forward (In-Reply-To, no References), and for `case reply`."""
    partner = "tia@conv16.example"
    first = mail(partner, SUPPORT, "Threading please", "First.")
    world.send(first)
    case_id = case_id_of(world.wait_for(partner)[0])
    fwd = forwarded(world, case_id)
    outlook = reply(fwd, BOSS, "Answer one.")
    del outlook["References"]
    world.send(outlook)
    answer = world.wait_for(partner, 2)[1]
    assert answer["In-Reply-To"] == first["Message-ID"]
    world.mg("case", "reply", str(case_id), "Answer two.", as_user="demo")
    second = world.wait_for(partner, 3)[2]
    assert second["In-Reply-To"] == answer["Message-ID"]
    assert first["Message-ID"] in str(second["References"])


def test_case_mail_gives_back_the_untrimmed_messages(world: World, tmp_path: Path) -> None:
    """History trims quotes; `case mail` writes the raw messages as an mbox, and importing
    that mbox again records nothing twice."""
    import contextlib
    import mailbox

    partner = "uma@conv17.example"
    ack = new_case(world, partner, "Raw please", "From the start.\n")
    case_id = case_id_of(ack)
    world.send(reply(ack, partner, "Second word."))
    forwarded(world, case_id, count=2)
    assert "On Monday" not in world.case(case_id)["history"][-1]["body"]
    out = tmp_path / "case.mbox"
    world.mg("case", "mail", str(case_id), "--output", str(out))
    with contextlib.closing(mailbox.mbox(out)) as mbox:
        box = [bytes(m) for m in mbox]
    assert len(box) == 2
    assert b"From the start." in box[0]  # a body line starting "From " survives (as ">From ")
    assert b"On Monday" in box[1] and b"> To add to it" in box[1]
    entries = len(world.case(case_id)["history"])
    world.mg("import", "mbox", str(out), "--section", "Support")
    world.settle()
    assert len(world.case(case_id)["history"]) == entries
    assert world.mg("case", "mail", "999999", ok=False).err.startswith("mailgated: error: no case")


def test_a_watcher_cannot_pass_for_staff_with_what_we_copied_them(world: World) -> None:
    """Copies to watchers never name our forward to a staff member, and a forged staff From
    answering what the watcher got changes nothing and relays nothing."""
    partner, watcher = "vic@conv18.example", "wes@conv18other.example"
    world.send(mail(partner, SUPPORT, "Watched case", "Hello.", cc=watcher))
    case_id = case_id_of(world.wait_for(partner)[0])
    fwd = forwarded(world, case_id)
    world.send(reply(fwd, BOSS, "We are on it."))
    copy = world.wait_for(watcher)[0]
    named = f"{copy['In-Reply-To'] or ''} {copy['References'] or ''}"
    assert str(fwd["Message-ID"]) not in named
    forged = mail(BOSS, SUPPORT, f"Re: [{case_id}] Watched case", "#priority high\nPay to 1234.")
    forged["In-Reply-To"] = str(copy["Message-ID"])
    forged["References"] = f"{named} {copy['Message-ID']}".strip()
    world.send(forged, sender=watcher)
    world.settle()
    case = world.case(case_id)
    assert case["priority"] == "normal"
    assert len(world.received(partner)) == 2  # the acknowledgement and the real answer only


def test_a_one_line_note_keeps_its_text(world: World) -> None:
    """'#note text' on one line records the text as the note."""
    partner = "xan@conv19.example"
    case_id = case_id_of(new_case(world, partner, "One-line note"))
    fwd = forwarded(world, case_id)
    world.send(reply(fwd, BOSS, "#note customer is angry, call back tomorrow"))
    world.settle()
    case = world.case(case_id)
    assert any(h["body"] == "customer is angry, call back tomorrow" for h in case["history"]), case[
        "history"
    ]
    assert len(world.received(partner)) == 1  # the acknowledgement only: a note is internal
    bodies = [m.message.get_body(("plain",)) for m in world.received(BOSS)]
    assert not [b for b in bodies if b is not None and "not a command" in b.get_content()]


def test_copies_to_outside_watchers_never_name_internal_addresses(world: World) -> None:
    """A partner-side watcher's copy names no internal watcher or staff address; the
    internal watcher gets its own copy (issue 12 item 14)."""
    partner, colleague = "ria@conv24.example", "sam@conv24.example"
    world.send(mail(partner, SUPPORT, "Privacy", "Hello.", cc=f"{colleague}, {DEMO}"))
    case_id = case_id_of(world.wait_for(partner)[0])
    assert sorted(world.case(case_id)["watchers"]) == sorted([colleague, DEMO])
    fwd = forwarded(world, case_id)
    world.send(reply(fwd, BOSS, "Answer for everyone."))
    world.wait_for(partner, 2)
    outside = world.wait_for(colleague)[0]
    inside = world.wait_for(DEMO, where=lambda m: "Answer for everyone." in m.get_content())[0]
    world.settle()
    for message in [outside, *[r.message for r in world.received(partner)]]:
        head = str(message).split("\n\n", 1)[0].lower()
        assert DEMO not in head and BOSS not in head, head
    assert [a.addr_spec for a in outside["To"].addresses] == [colleague]
    assert [a.addr_spec for a in inside["To"].addresses] == [DEMO]
    for sent in world.received(colleague):
        assert DEMO not in sent.data.decode("utf-8", "replace").lower()
