"""Reply tokens with a per-user generation: old tokens read as before; a rotated one says so."""

from __future__ import annotations

from mailgated.outbound import tokens

SECRET = b"s" * 32


def test_generation_zero_tokens_are_the_tokens_sent_before_generations() -> None:
    """A token sent before `rotate-token` existed still verifies, as generation 0."""
    old = f"101-u7-{tokens._mac(SECRET, 'reply', 101, 7)}"
    assert tokens.reply_token(SECRET, 101, 7) == old
    assert tokens.read_token(SECRET, old) == tokens.Token(101, 7, 0)


def test_a_token_names_its_generation_and_cannot_be_moved_to_another() -> None:
    """The generation is signed: editing it in the address makes it no token at all."""
    token = tokens.reply_token(SECRET, 101, 7, 3)
    assert token.startswith("101-u7g3-")
    assert tokens.read_token(SECRET, token) == tokens.Token(101, 7, 3)
    assert tokens.read_token(SECRET, token.replace("g3", "g4")) is None
    assert tokens.read_token(SECRET, token.replace("-u7g3", "-u7")) is None
    assert tokens.read_token(SECRET, tokens.reply_token(SECRET, 101)) == tokens.Token(101)
