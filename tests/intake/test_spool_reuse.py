"""The spool keeps processed files in free/ and writes the next messages over them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from intake_helpers import message

from mailgated.intake import spool as spool_module
from mailgated.intake.spool import Envelope, FreeFiles, Spool


def _env() -> Envelope:
    return Envelope(source="test", envelope_from=None, recipients=["support@example.com"])


@pytest.fixture(autouse=True)
def look_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """free/ is listed at every take, not once a second: the tests spool in quick turns."""
    monkeypatch.setattr(spool_module, "FREE_LOOK", 0.0)


def _inodes(folder: Path) -> set[int]:
    return {p.stat().st_ino for p in folder.iterdir()}


def test_a_done_file_is_kept_and_the_next_message_is_written_over_it(tmp_path: Path) -> None:
    """A processed message's file waits in free/; the next message spooled is written over
    it, cut to its own length."""
    intake, worker = Spool(tmp_path / "spool"), Spool(tmp_path / "spool", slot=0)
    intake.put(message(1, body="x" * 5000), _env())  # longer than the next one
    [claimed] = worker.claim_batch(10)
    worker.done_many([claimed])
    free = tmp_path / "spool" / "free"
    assert [p.name for p in free.iterdir()] == [claimed.id]
    kept = _inodes(free)

    second = intake.put(message(2), _env())
    assert list(free.iterdir()) == []
    assert _inodes(tmp_path / "spool" / "new") == kept
    assert intake.read(second) == message(2)  # nothing of the longer first message is left
    [again] = worker.claim_batch(10)
    assert (again.id, again.raw, again.envelope.recipients) == (
        second,
        message(2),
        ["support@example.com"],
    )


def test_a_big_done_file_is_emptied_before_it_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """free/ keeps no big message's bytes: a done file over FREE_EMPTY_OVER is emptied when
    kept, a small one is kept as it is (the next message is written over it)."""
    monkeypatch.setattr(spool_module, "FREE_EMPTY_OVER", 4096)
    spool = Spool(tmp_path / "spool", slot=0)
    big = spool.put(message(1, body="x" * 8000), _env())
    small = spool.put(message(2), _env())
    small_size = (tmp_path / "spool" / "new" / small).stat().st_size
    spool.done_many(spool.claim_batch(10))
    free = tmp_path / "spool" / "free"
    assert {p.name: p.stat().st_size for p in free.iterdir()} == {big: 0, small: small_size}


def test_an_empty_file_left_by_a_crash_is_no_message(tmp_path: Path) -> None:
    """An emptied file that a crash left in cur/ or new/ goes back to free/, never processed."""
    spool = Spool(tmp_path / "spool", slot=0)
    real = spool.put(message(1), _env())
    [held] = spool.claim_batch(10)
    (tmp_path / "spool" / "cur" / "0" / "1.000000.emptied").touch()  # after the truncate
    assert spool.recover() == 1  # the real claim only
    assert sorted(os.listdir(tmp_path / "spool" / "new")) == [real]
    assert os.listdir(tmp_path / "spool" / "free") == ["1.000000.emptied"]

    (tmp_path / "spool" / "new" / "0.000000.stray").touch()
    assert [c.id for c in spool.claim_batch(10)] == [held.id]
    assert sorted(os.listdir(tmp_path / "spool" / "free")) == [
        "0.000000.stray",
        "1.000000.emptied",
    ]
    assert spool.counts()["new"] == 0 and spool.entries() == [
        e for e in spool.entries() if e.id == held.id
    ]


def test_free_keeps_at_most_its_share_and_deletes_the_rest(tmp_path: Path) -> None:
    """Past `keep` files in free/, a done file is deleted, so a burst leaves no pile behind."""
    spool = Spool(tmp_path / "spool", slot=0)
    spool.free = FreeFiles(tmp_path / "spool" / "free", keep=2)
    for n in range(3):
        spool.put(message(n), _env())
    spool.done_many(spool.claim_batch(10))
    assert len(os.listdir(tmp_path / "spool" / "free")) == 2
    assert os.listdir(tmp_path / "spool" / "cur" / "0") == []


def test_a_kept_file_we_may_not_write_is_replaced_by_a_new_one() -> None:
    """A file in free/ that this user may not write (another's) is replaced by a new file."""
    with tempfile.TemporaryDirectory() as where:  # pytest's tmp_path is root's alone
        os.chmod(where, 0o755)
        _spool_over_anothers_file(Path(where) / "spool")


def _spool_over_anothers_file(root: Path) -> None:
    Spool(root)
    theirs = root / "free" / "1.000000.theirs"
    theirs.touch(mode=0o600 if os.geteuid() == 0 else 0o000)  # root's, or unwritable
    become = ""
    if os.geteuid() == 0:  # root writes anything: the spool's user is someone else
        for path in [root, *root.rglob("*")]:
            if path != theirs:
                os.chown(path, 65534, 65534)
        become = "os.setgid(65534); os.setuid(65534);"  # after the imports, read from /root
    put = (
        "import os, sys; from mailgated.intake.spool import Envelope, Spool;"
        f"{become} spool = Spool(sys.argv[1]);"
        "print(spool.put(sys.stdin.buffer.read(), Envelope('test', None)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", put, str(root)], input=message(1), capture_output=True, check=True
    )
    spooled = done.stdout.decode().strip()
    assert Spool(root).read(spooled) == message(1)
    assert not theirs.exists() and os.listdir(root / "tmp") == []


def test_a_spool_whose_free_folder_was_removed_still_takes_and_processes_mail(
    tmp_path: Path,
) -> None:
    """Without free/ (an operator removed it) mail goes to new files and done ones are deleted."""
    spool = Spool(tmp_path / "spool", slot=0)
    first = spool.put(message(1), _env())
    (tmp_path / "spool" / "free").rmdir()
    [claimed] = spool.claim_batch(10)
    spool.done_many([claimed])
    assert claimed.id == first and os.listdir(tmp_path / "spool" / "cur" / "0") == []
    assert not (tmp_path / "spool" / "free").exists()
    assert spool.read(spool.put(message(2), _env())) == message(2)
