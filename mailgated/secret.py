"""The site secret: the HMAC key of reply tokens and calendar feed URLs.

Made on first use (32 random bytes, hex, mode 0600) if the file is absent, so a
fresh install needs no step for it; every daemon sharing one database must be
given the same file.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from mailgated.config import Config, ConfigError

log = logging.getLogger("mailgated.secret")


def load_secret(config: Config) -> bytes:
    path = Path(config.security.secret_file)
    try:
        _private(path)
        value = path.read_text().strip()
    except FileNotFoundError:
        value = _create(path)
    except OSError as exc:
        raise ConfigError(f"security.secret_file: cannot read {path}: {exc.strerror}") from None
    if len(value) < 32:
        raise ConfigError(f"security.secret_file: {path} holds fewer than 32 characters")
    return value.encode()


def _private(path: Path) -> None:
    """A secret readable by others is made private (mode fixed, said in the log); when
    that is not allowed (not the owner), it is refused with one line."""
    mode = path.stat().st_mode & 0o777
    if not mode & 0o007:
        return
    try:
        os.chmod(path, mode & 0o770)
    except OSError as exc:
        raise ConfigError(
            f"security.secret_file: {path} is readable by others (mode {mode:04o}) and its"
            f" mode cannot be fixed ({exc.strerror}): chmod o-rwx {path}"
        ) from None
    log.warning(
        "security.secret_file: %s was readable by others (mode %04o); mode set to %04o",
        str(path),
        mode,
        mode & 0o770,
    )


def _create(path: Path) -> str:
    """Make the secret file, or read the one another process made meanwhile. It is
    written whole to a private file of its own, then linked into place: `path` is never
    seen empty or half written (two workers starting at once on a fresh install read one
    another's file between its creation and its write, and one of them failed)."""
    value = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    except OSError as exc:
        raise ConfigError(f"security.secret_file: cannot create {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"security.secret_file: cannot create {path}: {exc.strerror}") from None
    finally:
        os.unlink(tmp)
    return value
