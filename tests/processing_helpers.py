"""A Processor on a test database: one section, Support, managed by the boss."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailgated.app import App
from mailgated.config import Config, SecurityConfig, SpoolConfig
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.process import Processor

SECRET = b"0123456789abcdef0123456789abcdef"
BOSS = ("boss", "Big Boss", "boss@example.com")


def support_processor(
    db: Database,
    tmp: Path,
    support: str,
    *,
    staff: Sequence[tuple[str, str, str]] = (BOSS,),
    max_failures: int = SpoolConfig.max_failures,
    **sections: Any,
) -> Processor:
    """The processor of an App whose spool and secret live under `tmp`, with the `staff`
    (login, name, address) and a section Support at `support` managed by "boss"; `sections`
    are more Config sections."""
    with db.session() as session:
        d = Directory(session)
        for login, name, address in staff:
            d.add_user(login, name, address)
        d.add_section("Support", email=support, manager="boss")
    config = Config(
        spool=SpoolConfig(path=str(tmp / "spool"), max_failures=max_failures),
        security=SecurityConfig(secret_file=str(tmp / "secret.key")),
        **sections,
    )
    return App(config, db=db, secret=SECRET).processor
