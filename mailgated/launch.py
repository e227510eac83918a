"""The `mailgated` console script.

`mailgated deliver` runs once per message under fetchmail or an MTA pipe, so
it goes straight to the MDA's own tiny argument parser (no click, no
logging setup): start-up time is most of its cost. Everything else goes to the
click CLI in `mailgated.cli`.
"""

from __future__ import annotations

import sys


def main() -> None:
    from mailgated.intake.mda import run, wants_deliver

    if wants_deliver(sys.argv[1:]):
        run()
    from mailgated.cli import main as cli_main

    cli_main()
