"""What every command needs, built from the composition root (app.py) on first use.

Kept free of heavy imports so `mailgated deliver` stays fast: the App is made
when a command first asks for it, and its pieces when first used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailgated.app import App
    from mailgated.config import Config
    from mailgated.db import Database


@dataclass
class Context:
    config_path: str | None = None
    verbosity: int = 0
    acting_login: str | None = None
    _app: App | None = field(default=None, repr=False)
    _schema_ready: bool = field(default=False, repr=False)

    @property
    def app(self) -> App:
        """The composition root for this command, built from the config file."""
        if self._app is None:
            from mailgated.app import App
            from mailgated.config import load

            self._app = App(load(self.config_path))
        return self._app

    def close(self) -> None:
        """Close the database connections this command opened (if it opened any)."""
        if self._app is not None and "db" in vars(self._app):
            self._app.db.dispose()

    @property
    def config(self) -> Config:
        return self.app.config

    @property
    def db(self) -> Database:
        """The existing database, upgraded to the current schema on first use."""
        return self.database(create=False)

    def database(self, create: bool, announce: bool = True) -> Database:
        """The database at the current schema; `create` (init, run) may make a new one.

        `announce` logs (at INFO, so with -v) which config and database are used."""
        db = self.app.db
        if not self._schema_ready:
            import logging

            from mailgated.db import display_url

            config = self.config
            logging.getLogger("mailgated").log(
                logging.INFO if announce else logging.DEBUG,
                "config %s; database %s",
                config.path or "(none: built-in defaults)",
                display_url(config.database.url),
            )
            db.require_schema(create=create)
            self._schema_ready = True
        return db
