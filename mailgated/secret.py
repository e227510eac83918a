"""The site secret: the HMAC key of reply tokens and calendar feed URLs.

Made on first use (32 random bytes, hex, mode 0600) if the file is absent, so a
fresh install needs no step for it; every daemon sharing one database must be
given the same file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from mailgated.config import Config, ConfigError


def load_secret(config: Config) -> bytes:
    path = Path(config.security.secret_file)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = _create(path)
    except OSError as exc:
        raise ConfigError(f"security.secret_file: cannot read {path}: {exc.strerror}") from None
    if len(value) < 32:
        raise ConfigError(f"security.secret_file: {path} holds fewer than 32 characters")
    return value.encode()


def _create(path: Path) -> str:
    value = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"security.secret_file: cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return value
