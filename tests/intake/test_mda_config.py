"""`mailgated deliver` reads its two settings from the config file without tomllib when
the file is plain TOML, and exactly as tomllib would (or lets tomllib read it)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from intake_helpers import deliver, message

from mailgated.intake.mda import quick_toml, read_config
from mailgated.intake.spool import Spool

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "mailgated.toml.example"

QUICK = [  # read without tomllib, to the same tables
    '[spool]\npath = "/var/spool/mailgated"\n',
    "[spool]\r\npath = '/srv/mg spool'\r\n[listen]\r\nmax_message_size = 1_048_576\r\n",
    '# top\n[ spool ]  # c ] [\n  path="s"#x\n\n[listen]\nmax_message_size = 0\nsmtp = ""\n',
    "[a]\nx = [ \"a\", 'b', 1, -2.5e-3, [true, false], [], ]  # c\ny = +7\nz = 1e05\nw = 0.0\n",
    "[[mailbox]]\nurl = 'imap://x'\n[[mailbox]]\nurl = 'pop3://y'\n[spool]\npath = \"p\"\n",
    '[spool]\npath = "Übung/spool"\n[a]\nk = "#not a comment"\n',
]
ASIDE = [  # beyond the subset (or not TOML): tomllib's answer or error is the one
    '[spool]\npath = "/x/\\u0073pool"\n',
    "[spool]\npath = '''/x'''\n",
    '[spool]\npath = """/x"""\n',
    "spool.path = '/x'\n",
    "[spool]\n\"path\" = '/x'\n",
    "[spool.x]\ny = 1\n",
    "[a]\nx = [\n  1,\n]\n",
    "[a]\nx = {y = 1}\n",
    "[a]\nd = 1979-05-27\n",
    "[a]\nh = 0x1f\n",
    "[a]\nf = inf\n",
    "[a]\nn = 01\n",
    "[a]\nn = 1__0\n",
    "[a]\nn = 1.\n",
    "[a]\nn = .5\n",
    "[a]\nn = 1_\n",
    "[a]\nx = 1\nx = 2\n",
    "[a]\n[a]\n",
    "[a]\n[[a]]\n",
    "[[a]]\n[a]\n",
    "x = 1\n",
    "[spool\npath = ",
    "[a]\nx = 1 2\n",
    "[a]\nx = 'a' 'b'\n",
    "[a]\nx = [1 2]\n",
    "[a]\nx = [,]\n",
    "[a]\nx =\n",
    "[a]\nx = 'unterminated\n",
    "[a]]\n",
    "[[a]\n",
    "[a]\nx = 1\x01\n",
    "[a]\nx = 1\rz = 2\n",
    "\ufeff[a]\nx = 1\n",
    "[a]\nx = truex\n",
]


def tables(text: str) -> dict[str, object]:
    return {k: v for k, v in tomllib.loads(text).items() if isinstance(v, dict)}


def test_the_example_config_is_read_as_tomllib_reads_it() -> None:
    """The shipped example is plain TOML: read without tomllib, to tomllib's tables."""
    raw = EXAMPLE.read_bytes()
    assert quick_toml(raw) == tables(raw.decode())


@pytest.mark.parametrize("text", QUICK)
def test_plain_toml_is_read_as_tomllib_reads_it(text: str) -> None:
    """Comments, CRLF, spacing, literal strings, numbers, arrays: the same values."""
    assert quick_toml(text.encode()) == tables(text)


@pytest.mark.parametrize("text", ASIDE)
def test_anything_else_is_left_to_tomllib(text: str) -> None:
    """Escapes, multi-line values, dotted keys, dates, duplicates, broken files: not read."""
    assert quick_toml(text.encode()) is None


def test_read_config_falls_back_to_tomllib(tmp_path: Path) -> None:
    """A spool path written with an escape still names the same folder."""
    config = tmp_path / "mailgated.toml"
    config.write_text('[spool]\npath = "sp\\u006fol"\n[listen]\nmax_message_size = 5_000\n')
    assert read_config(str(config)) == (str(tmp_path / "spool"), 5000)


def test_deliver_with_a_config_beyond_the_subset_spools(tmp_path: Path) -> None:
    """deliver under a config that only tomllib reads puts the mail in the same spool."""
    config = tmp_path / "mailgated.toml"
    config.write_text(f'[spool]\npath = """{tmp_path}/spool"""\n[a]\nwhen = 1979-05-27\n')
    done = deliver(config, message(1))
    assert (done.returncode, done.stderr) == (0, b"")
    assert len(Spool(tmp_path / "spool").entries()) == 1


PLAIN_KEYS = ["path", "max_message_size", "a", "b-c", "1"]
ODD_KEYS = ['"q"', "a.b", "", " k "]
PLAIN_VALUES = ['"s"', "'s'", '"a#b"', "'a\"b'", '""', "1", "+1", "-1", "1_000", "1.5", "1e5",
                "1E+5", "1e-05", "-0.0", "true", "false", "[]", "[1, 2,]", "[ 1 , 'a' ]",
                "[[1],[2]]", '["a]"]', "['#']"]  # fmt: skip
ODD_VALUES = ['"x', '"""x"""', "'''x'''", '"a\\"b"', "'a\\b'", "01", "1__0", "1_", "1.", ".5",
              "1e", "0x1f", "inf", "nan", "1979-05-27", "07:32:00", "tru", "[1", "[1,,2]",
              "[,]", "{a=1}", "[1 2]"]  # fmt: skip
TAILS = ["", " ", "  # c", "#c", " x", ",", "]"]
HEADERS = ["[spool]", "[listen]", "[a]", "[ a ]", "[[m]]", "[a.b]", '["a"]', "[a", "[]", "[a] x"]


def test_random_files_are_read_as_tomllib_reads_them_or_left_to_it() -> None:
    """3,000 random files of plain and odd lines: whenever the quick reader answers, tomllib
    reads the file too, to the same tables (seeded: the same files every run)."""
    import random

    rng = random.Random(15)
    answered = 0
    for _ in range(3000):
        lines = [rng.choice(HEADERS[:5])]
        for _ in range(rng.randint(0, 5)):
            odd = rng.random() < 0.1
            if rng.random() < 0.15:
                lines.append(rng.choice(HEADERS[5:] if odd else HEADERS[:5]))
                continue
            key = rng.choice(ODD_KEYS if odd and rng.random() < 0.3 else PLAIN_KEYS)
            value = rng.choice(ODD_VALUES if odd else PLAIN_VALUES)
            tail = rng.choice(TAILS[4:] if odd and rng.random() < 0.3 else TAILS[:4])
            lines.append(f"{key}{rng.choice(['=', ' = '])}{value}{tail}")
        text = "\n".join(lines) + rng.choice(["", "\n"])
        quick = quick_toml(text.encode())
        if quick is None:
            continue
        answered += 1
        assert quick == tables(text), text  # tables() raises if tomllib refuses the file
    assert answered > 500  # the quick reader was exercised, not only bypassed
