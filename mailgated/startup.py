"""Checks made before the daemon starts, each failing with one line that names the key.

A listening address already taken (another mailgated, Postfix on 25), or one the
user may not bind, would otherwise surface as a traceback from deep inside asyncio.
"""

from __future__ import annotations

import errno
import socket

from mailgated.config import Config, ConfigError, parse_listen

WHAT_TO_DO = {
    errno.EADDRINUSE: "another program listens there (`ss -ltnp` names it):"
    " stop it or choose another port",
    errno.EACCES: "a port below 1024 needs CAP_NET_BIND_SERVICE (see the README):"
    " choose a port above 1023 or grant it",
    errno.EADDRNOTAVAIL: "no interface of this host has that address: correct the host part",
}


def check_listeners(config: Config) -> None:
    """Bind (and release at once) every configured TCP listener address."""
    for key in ("smtp", "lmtp", "http"):
        value: str = getattr(config.listen, key)
        if not value or value.startswith("unix:"):
            continue
        try:
            host, port = parse_listen(value)
            number = int(port)
        except (ConfigError, ValueError, TypeError):
            raise ConfigError(
                f"listen.{key}: {value!r} is not host:port (e.g. 127.0.0.1:2525)"
            ) from None
        try:
            infos = socket.getaddrinfo(
                host or None, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise ConfigError(f"listen.{key}: cannot resolve {host!r}: {exc.strerror}") from None
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    hint = WHAT_TO_DO.get(exc.errno or 0, "correct the address")
                    raise ConfigError(
                        f"listen.{key}: cannot listen on {value}: {exc.strerror}; {hint}"
                    ) from None
