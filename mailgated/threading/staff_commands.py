"""CommandReport a case by mail: command lines at the top of a verified staff reply.

The seed's header forms and short forms, one or more per line, before any text:

    Set-State: pending          #pending   #open   #close
    Set-Priority: high          #priority high
    Set-User: demo              #assign demo
                                #note      (internal: historize, relay nothing)
                                #escalate  #watch ADDR   #unwatch ADDR

They are removed from what is relayed to the partner. Each runs through
CaseService (so every change is in the history); one that fails is reported
back to the staff member (`command_error` mail) and the others still run.
COMMANDS is the policy: command name → (takes an argument, what it does).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mailgated.cases import CaseService
from mailgated.directory import SectionsAndStaff
from mailgated.errors import Invalid, MailgatedError, NotFound
from mailgated.models import PRIORITY_NAMES, Case

_HEADER_FORM = re.compile(r"^(set-state|set-priority|set-user)\s*:\s*(.*)$", re.IGNORECASE)
STATE_WORDS = {
    "open": "open",
    "pending": "pending",
    "close": "close",
    "closed": "close",
    "done": "close",
    "cancel": "cancel",
    "cancelled": "cancel",
    "canceled": "cancel",
    "draft": "reset",
    "reset": "reset",
}


@dataclass(frozen=True)
class Command:
    name: str  # "state", "priority", "assign", "note", "escalate", "watch", "unwatch"
    arg: str
    text: str  # as written, for messages to the staff member


@dataclass
class CommandReport:
    """What the command lines of one reply did."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    note: bool = False
    state_set: bool = False


Handler = Callable[[CaseService, Case, str, SectionsAndStaff, CommandReport], str]


def _state(
    service: CaseService, case: Case, arg: str, lookup: SectionsAndStaff, out: CommandReport
) -> str:
    button = STATE_WORDS.get(arg.strip().lower())
    if button is None:
        raise Invalid(f"unknown state {arg!r}: use open, pending, closed, cancelled or draft")
    out.state_set = True
    before = case.state
    if before == {"close": "closed", "cancel": "cancelled", "reset": "draft"}.get(button, button):
        return f"state already {before}"
    getattr(service, button)(case)
    return f"state {before} → {case.state}"


def _priority(
    service: CaseService, case: Case, arg: str, lookup: SectionsAndStaff, out: CommandReport
) -> str:
    value: str | int = int(arg) if arg.strip().isdigit() else arg
    service.set_priority(case, value)
    return f"priority {PRIORITY_NAMES[case.priority]}"


def _assign(
    service: CaseService, case: Case, arg: str, lookup: SectionsAndStaff, out: CommandReport
) -> str:
    user = lookup.users_by_login.get(arg.strip())
    if user is None:
        raise NotFound(f"no active user with login '{arg.strip()}'")
    service.assign(case, user)
    return f"responsible {user.login}"


def _note(
    service: CaseService, case: Case, arg: str, lookup: SectionsAndStaff, out: CommandReport
) -> str:
    out.note = True
    return "internal note (not sent)"


def _escalate(
    service: CaseService, case: Case, arg: str, lookup: SectionsAndStaff, out: CommandReport
) -> str:
    service.escalate(case)
    return f"escalated to {case.section.name}"


def _watch(
    service: CaseService, case: Case, arg: str, lookup: SectionsAndStaff, out: CommandReport
) -> str:
    service.watch(case, arg)
    return f"watcher {arg.strip().lower()} added"


def _unwatch(
    service: CaseService, case: Case, arg: str, lookup: SectionsAndStaff, out: CommandReport
) -> str:
    service.unwatch(case, arg)
    return f"watcher {arg.strip().lower()} removed"


# short form → (command, fixed argument or None when it takes one, handler)
COMMANDS: dict[str, tuple[str | None, Handler]] = {
    "open": ("open", _state),
    "pending": ("pending", _state),
    "close": ("close", _state),
    "note": ("", _note),
    "escalate": ("", _escalate),
    "assign": (None, _assign),
    "priority": (None, _priority),
    "watch": (None, _watch),
    "unwatch": (None, _unwatch),
}
HEADER_FORMS = {"set-state": "state", "set-priority": "priority", "set-user": "assign"}
HANDLERS: dict[str, Handler] = {"state": _state, "priority": _priority, "assign": _assign}


def split(text: str) -> tuple[list[Command], list[str], str]:
    """(commands, parse errors, the rest of the text) of a reply."""
    lines = text.splitlines()
    commands: list[Command] = []
    errors: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if not line:
            index += 1
            continue
        header = _HEADER_FORM.match(line)
        if header:
            commands.append(Command(HEADER_FORMS[header.group(1).lower()], header.group(2), line))
        elif _is_command_line(line):
            line, note_text = _note_text(line)
            found, bad = _short_forms(line)
            commands += found
            errors += bad
            if note_text:
                lines[index] = note_text
                break
        else:
            break
        index += 1
    rest = "\n".join(lines[index:]).strip("\n")
    return commands, errors, rest


def _note_text(line: str) -> tuple[str, str]:
    """Split "#note call them back tomorrow" into the commands and the note's own text:
    after `#note`, the first word that is not a command starts the text."""
    words = line.split()
    for i, word in enumerate(words):
        if word.lower() == "#note":
            tail = words[i + 1 :]
            for j, rest in enumerate(tail):
                if not (rest.startswith("#") and rest[1:].lower() in COMMANDS):
                    return " ".join(words[: i + 1 + j]), " ".join(tail[j:])
    return line, ""


def _is_command_line(line: str) -> bool:
    first = line.split()[0]
    return first.startswith("#") and first[1:].lower() in COMMANDS


def _short_forms(line: str) -> tuple[list[Command], list[str]]:
    found: list[Command] = []
    errors: list[str] = []
    words = line.split()
    i = 0
    while i < len(words):
        word = words[i]
        name = word[1:].lower() if word.startswith("#") else ""
        if name not in COMMANDS:
            errors.append(f"{word}: not a command")
            i += 1
            continue
        fixed, _ = COMMANDS[name]
        if fixed is None:
            arg_words = []
            while i + 1 < len(words) and not words[i + 1].startswith("#"):
                i += 1
                arg_words.append(words[i])
            if not arg_words:
                errors.append(f"{word}: needs an argument")
            else:
                found.append(Command(name, " ".join(arg_words), f"{word} {' '.join(arg_words)}"))
        else:
            found.append(Command("state" if fixed else name, fixed, word))
        i += 1
    return found, errors


def run(
    service: CaseService, case: Case, commands: list[Command], lookup: SectionsAndStaff
) -> CommandReport:
    """Carry out the commands in order; a failure is reported, the rest still runs."""
    out = CommandReport()
    for command in commands:
        handler = HANDLERS.get(command.name) or COMMANDS[command.name][1]
        try:
            out.done.append(f"{command.text}: {handler(service, case, command.arg, lookup, out)}")
        except MailgatedError as exc:
            out.failed.append(f"{command.text}: {exc}")
        except ValueError as exc:
            out.failed.append(f"{command.text}: {exc}")
    return out
