"""Errors a user sees: each carries one line that names the thing and what is wrong."""


class MailgatedError(Exception):
    """Base of every error the CLI prints as one line (never a traceback)."""


class NotFound(MailgatedError):
    """An unknown section, user, category, partner, case, rule…"""


class Invalid(MailgatedError):
    """A value that cannot be accepted (duplicate name, cycle, bad date…)."""


class IllegalTransition(MailgatedError):
    """A case state change the lifecycle does not allow."""


def first_line(exc: BaseException) -> str:
    """An error in one line for the log or the terminal: a database error's own message
    (not SQLAlchemy's wrapper around it), cut at 500 characters."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(exc).__name__])[0][:500]
