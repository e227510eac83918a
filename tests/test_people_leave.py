"""People leave: `user disable|enable` and `user rotate-token`, seen from the mail side —
whose replies count, who gets mail, what the case records."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from conversation import STAFF, SUPPORT, World, case_id_of, mail, reply, serve_module

from mailgated.directory import Directory
from mailgated.outbound import tokens

DOMAIN = "mycompany.example"
LEAVER = f"leaver@{DOMAIN}"
BOSS = STAFF["boss"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:

    def add_leaver(world: World) -> None:
        with world.db.session() as session:
            Directory(session).add_user("leaver", "Lea Ver", LEAVER)

    yield from serve_module(request, tmp_path_factory, "leave", add_leaver)


def about(case_id: int) -> object:
    return lambda m: f"[{case_id}]" in str(m["Subject"])


def count(world: World, to: str, case_id: int) -> int:
    return len([r for r in world.received(to) if f"[{case_id}]" in str(r.message["Subject"])])


def kinds(world: World, case_id: int) -> list[str]:
    return [h["kind"] for h in world.case(case_id)["history"]]


def test_a_disabled_user_counts_for_nothing_and_gets_no_mail(world: World) -> None:
    """Disabled: `user disable` lists their open cases; their reply (with their own valid
    token) changes nothing and is kept as unverified, with no notice; the partner's next
    mail goes to the section manager. Enabled again: their reply counts."""
    partner = "pia@leave1.example"
    world.send(mail(partner, SUPPORT, "Leaving soon"))
    ack = world.wait_for(partner)
    case_id = case_id_of(ack[0])
    world.mg("case", "assign", str(case_id), "leaver", as_user="boss")
    world.send(reply(ack[0], partner, "Any news?"))
    fwd: EmailMessage = world.wait_for(LEAVER, where=about(case_id))[0]

    out = world.mg("user", "disable", "leaver").out
    assert "user 'leaver' disabled" in out
    assert f"  {case_id}  draft" in out and "Leaving soon" in out
    assert "disabled" in world.mg("user", "list").out
    refused = world.mg("case", "assign", str(case_id), "leaver", as_user="boss", ok=False)
    assert refused.err.strip() == (
        "mailgated: error: user 'leaver' is disabled: assign the case to someone else"
        " (or `mailgated user enable leaver`)"
    )

    world.send(reply(fwd, f"Lea Ver <{LEAVER}>", "Fixed, closing."))
    world.settle()
    case = world.case(case_id)
    assert case["state"] == "draft"
    assert case["history"][-1]["kind"] == "unverified"
    assert count(world, partner, case_id) == 1  # the acknowledgement only
    assert count(world, LEAVER, case_id) == 1  # the forward from before: no notice

    world.send(reply(ack[0], partner, "Hello? Anyone?"))
    to_boss = world.wait_for(BOSS, where=lambda m: "Hello? Anyone?" in m.get_content())
    assert to_boss[0]["From"].addresses[0].display_name == f"{partner} via Support".replace(
        "@", " at "
    )
    world.settle()
    assert count(world, LEAVER, case_id) == 1

    world.mg("user", "enable", "leaver")
    world.send(reply(fwd, f"Lea Ver <{LEAVER}>", "Back again: fixed."))
    answer = world.wait_for(partner, 2)[1]
    assert "Back again: fixed." in answer.get_content()
    assert world.case(case_id)["state"] == "closed"


def test_rotate_token_invalidates_that_users_old_reply_addresses_only(world: World) -> None:
    """After `user rotate-token boss`, boss's reply to an earlier forward is unverified (and
    boss is told); a forward sent after it works; another user's old token still works."""
    partner = "rex@leave2.example"
    world.send(mail(partner, SUPPORT, "Rotate me"))
    case_id = case_id_of(world.wait_for(partner)[0])
    old_fwd = world.wait_for(BOSS, where=about(case_id))[0]
    world.mg("case", "assign", str(case_id), "leaver", as_user="boss")
    world.send(mail(partner, SUPPORT, f"Re: [{case_id}] Rotate me", "More."))
    leaver_fwd = world.wait_for(LEAVER, where=about(case_id))[0]

    done = world.mg("user", "rotate-token", "boss").out
    assert "user 'boss': earlier reply addresses no longer verify (generation 1)" in done
    world.send(reply(old_fwd, f"Big Boss <{BOSS}>", "Old address, should not count."))
    notice = world.wait_for(BOSS, 2, where=about(case_id))[1]
    assert notice["Auto-Submitted"] == "auto-replied"
    world.settle()
    assert kinds(world, case_id)[-1] == "unverified"
    assert count(world, partner, case_id) == 1

    world.send(reply(leaver_fwd, LEAVER, "Lea answers with her old address."))
    assert "Lea answers" in world.wait_for(partner, 2)[1].get_content()

    world.send(mail(partner, SUPPORT, f"Re: [{case_id}] Rotate me", "Still there?"))
    world.mg("case", "assign", str(case_id), "boss", as_user="boss")
    world.send(mail(partner, SUPPORT, f"Re: [{case_id}] Rotate me", "Boss, please."))
    new_fwd = world.wait_for(BOSS, where=lambda m: "Boss, please." in m.get_content())[0]
    token = str(new_fwd["Reply-To"].addresses[0].addr_spec).split("+", 1)[1].split("@")[0]
    assert tokens.read_token(b"x" * 32, token) is None  # signed, not guessable
    assert "g1-" in token
    world.send(reply(new_fwd, f"Big Boss <{BOSS}>", "New address counts."))
    assert "New address counts." in world.wait_for(partner, 3)[2].get_content()
