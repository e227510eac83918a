"""The architecture holds: the import contracts of pyproject.toml are kept, and
docs/architecture.md names every folder and top-level module of the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import mailgated

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "architecture.md"


def test_import_contracts_are_kept() -> None:
    """No folder imports what docs/architecture.md says it must not (import-linter)."""
    # in a process of its own: import-linter configures logging, which would silence ours
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and " KEPT" in done.stdout


def test_the_architecture_page_names_every_folder_and_module() -> None:
    """A new folder or top-level module is described in docs/architecture.md (its table)."""
    package = Path(mailgated.__file__).parent
    names = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    names |= {
        p.name for p in package.iterdir() if (p / "__init__.py").exists() and p.name != "migrations"
    }
    documented = set(re.findall(r"`([a-z_]+)(?:/|\.py)`", DOC.read_text()))
    assert names - documented == set()


def test_every_test_starts_with_one_line_of_intent() -> None:
    """Each test function opens with a docstring saying what it shows (house rule)."""
    import ast

    missing = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            is_test = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_test and node.name.startswith("test") and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(ROOT)}::{node.name}")
    assert missing == []
