#!/usr/bin/env bash
# Install everything the test suite needs, then run it (lint, types, pytest).
#   bash tests/run.sh [pytest args]
# As root, missing Debian packages (Dovecot, fetchmail, swaks, systemd's tools) are installed with apt-get;
# without root, tests needing them skip with the reason (under CI=true they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
need=()
have dovecot || need+=(dovecot-imapd dovecot-pop3d)
[ -e /usr/lib/dovecot/pop3 ] || need+=(dovecot-pop3d)
have fetchmail || need+=(fetchmail)
have swaks || need+=(swaks)
have systemd-analyze || need+=(systemd)  # systemd-analyze, systemd-sysusers, systemd-tmpfiles
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && have apt-get; then
        echo "installing Debian packages: ${need[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${need[@]}" >/dev/null
    else
        echo "note: ${need[*]} not installed and not root: tests that need them will skip"
    fi
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PY="$candidate"; break
        fi
    done
fi
[ -n "$PY" ] || { echo "Python 3.11 or newer is needed" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
log=$(mktemp)
if ! .venv/bin/python -m pip install -q -e '.[test]' >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "installing the Python packages failed" >&2; exit 1
fi
rm -f "$log"
.venv/bin/python -c 'import mailgated, pytest, aiosmtpd, vobject' # fail early if the install did not

.venv/bin/ruff check mailgated tests bench
.venv/bin/ruff format --check --quiet mailgated tests bench
.venv/bin/mypy
exec .venv/bin/pytest -q "$@"
