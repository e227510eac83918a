"""A throw-away Dovecot (IMAP + POP3) for tests: own config, users and Maildirs, loopback ports.

Started as `dovecot -F -c CONF`; no system configuration is touched. Dovecot
refuses to run its login processes as root, so under root (CI) every process
and mail file belongs to `nobody`, in a private directory that `nobody` can
enter. Missing binaries → `missing()` (skip locally, fail under CI=true).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from imapclient import imap_utf7

from mailgated.config import MailboxConfig

DOVECOT = shutil.which("dovecot") or (
    "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
)
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
PASSWORD = "s3cret-pass"

CONF = """\
base_dir = {base}/run
state_dir = {base}/state
instance_name = mailgated-test-{port_imap}
protocols = imap pop3
listen = 127.0.0.1
ssl = {ssl}
{ssl_files}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
log_path = {base}/dovecot.log
mail_location = maildir:~/Maildir
first_valid_uid = 0
auth_failure_delay = 0
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {base}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {base}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port_imap}
  }}
  inet_listener imaps {{
    port = {port_imaps}
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {port_pop3}
  }}
  inet_listener pop3s {{
    port = {port_pop3s}
  }}
}}
service anvil {{
  chroot =
}}
"""


def wire_name(folder: str) -> str:
    """A folder name as imaplib must be given it: modified UTF-7, quoted."""
    return '"' + imap_utf7.encode(folder).decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dovecot did not listen on {port}")


def self_signed_cert(directory: Path) -> tuple[Path, Path] | None:
    """A throw-away certificate for 127.0.0.1 (openssl CLI), or None without openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class Dovecot:
    base: Path
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    cert: Path | None
    user: str = "support"
    password: str = PASSWORD
    proc: subprocess.Popen[bytes] | None = None

    def kick(self) -> None:
        """End every IMAP/POP3 session of the user, server side (`doveadm kick`)."""
        subprocess.run(
            [DOVEADM, "-c", str(self.base / "dovecot.conf"), "kick", self.user],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def restart(self) -> None:
        """Stop Dovecot (its clients get BYE and EOF) and start it again on the same ports."""
        assert self.proc is not None
        self.kick()  # the master leaves logged-in sessions running: end them as a stop would
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.proc = _start(self.base / "dovecot.conf")
        _wait_port(self.imap_port, self.proc, self.base / "dovecot.log")

    def imap(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port)
        client.login(self.user, self.password)
        return client

    def pop3(self) -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", self.pop3_port)
        client.user(self.user)
        client.pass_(self.password)
        return client

    def append(self, *messages: bytes, flags: str = "", folder: str = "INBOX") -> None:
        client = self.imap()
        for raw in messages:
            client.append(wire_name(folder), flags or None, None, raw)
        client.logout()

    def create(self, *folders: str) -> None:
        client = self.imap()
        for folder in folders:
            assert client.create(wire_name(folder))[0] == "OK", folder
        client.logout()

    def folders(self) -> set[str]:
        """Every folder on the server, names decoded from modified UTF-7."""
        client = self.imap()
        _, data = client.list()
        client.logout()
        # each line: (flags) "delimiter" name — the name quoted when it has a space
        names = [bytes(line).split(b") ", 1)[1].split(b" ", 1)[1] for line in data if line]
        return {imap_utf7.decode(name.strip(b'"')) for name in names}

    def inbox(self, folder: str = "INBOX") -> list[tuple[int, str]]:
        """(UID, flags) of every message in the folder, expunged ones excluded."""
        client = self.imap()
        client.select(wire_name(folder))
        _, data = client.uid("fetch", "1:*", "(UID FLAGS)")
        client.logout()
        found = []
        for item in data:
            if not item:
                continue
            text = item.decode() if isinstance(item, bytes) else str(item)
            uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
            flags = text.split("FLAGS (")[1].split(")")[0]
            found.append((uid, flags))
        return sorted(found)

    def password_file(self, directory: Path) -> Path:
        path = directory / "mailbox.pass"
        path.write_text(self.password + "\n")
        return path

    def mailbox(
        self, directory: Path, scheme: str, folder: str = "", **options: Any
    ) -> MailboxConfig:
        """Our user's mailbox over `scheme` (imap, imaps, pop3, pop3s), the password in a file
        in `directory`; `options` are more MailboxConfig keys."""
        port = getattr(self, f"{scheme}_port")
        url = f"{scheme}://{self.user}@127.0.0.1:{port}" + (f"/{folder}" if folder else "")
        return MailboxConfig(url=url, password_file=str(self.password_file(directory)), **options)


def _start(conf: Path) -> subprocess.Popen[bytes]:
    assert DOVECOT is not None
    return subprocess.Popen(
        [DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if DOVECOT is None or not os.path.exists("/usr/lib/dovecot/pop3"):
        from conftest import missing

        missing("dovecot (dovecot-imapd, dovecot-pop3d) is not installed")
    root = os.geteuid() == 0
    owner = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.geteuid())
    base = Path(tempfile.mkdtemp(prefix="mailgated-dovecot-"))
    os.chmod(base, 0o755)
    home = base / "home"
    home.mkdir()
    cert_pair = self_signed_cert(base)
    ports = dict(
        port_imap=free_port(),
        port_imaps=free_port() if cert_pair else 0,
        port_pop3=free_port(),
        port_pop3s=free_port() if cert_pair else 0,
    )
    (base / "passwd").write_text(
        f"support:{{PLAIN}}{PASSWORD}:{owner.pw_uid}:{owner.pw_gid}::{home}\n"
    )
    ssl_files = f"ssl_cert = <{cert_pair[0]}\nssl_key = <{cert_pair[1]}" if cert_pair else ""
    group = "nogroup" if root else owner.pw_name
    try:
        import grp

        group = grp.getgrgid(owner.pw_gid).gr_name
    except KeyError:
        pass
    conf = base / "dovecot.conf"
    conf.write_text(
        CONF.format(
            base=base,
            user=owner.pw_name,
            group=group,
            ssl="yes" if cert_pair else "no",
            ssl_files=ssl_files,
            **ports,
        )
    )
    if root:
        for path in (home, *(base / n for n in ("cert.pem", "key.pem") if cert_pair)):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    log = base / "dovecot.log"
    server = Dovecot(
        base,
        ports["port_imap"],
        ports["port_imaps"],
        ports["port_pop3"],
        ports["port_pop3s"],
        cert_pair[0] if cert_pair else None,
        proc=_start(conf),
    )
    try:
        assert server.proc is not None
        _wait_port(ports["port_imap"], server.proc, log)
        _wait_port(ports["port_pop3"], server.proc, log)
        yield server
    finally:
        proc = server.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)
