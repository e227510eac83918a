"""What every command needs, made lazily: the config, then the database.

Kept free of heavy imports so `mailgated deliver` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailgated.config import Config
    from mailgated.db import Database


@dataclass
class Context:
    config_path: str | None = None
    verbosity: int = 0
    acting_login: str | None = None
    _config: Config | None = field(default=None, repr=False)
    _db: Database | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from mailgated.config import load

            self._config = load(self.config_path)
        return self._config

    @property
    def db(self) -> Database:
        """The database, created or upgraded to the current schema on first use."""
        if self._db is None:
            from mailgated.db import Database

            self._db = Database(self.config.database.url)
            self._db.require_schema()
        return self._db
