"""Errors a user sees: each carries one line that names the thing and what is wrong."""


class MailgatedError(Exception):
    """Base of every error the CLI prints as one line (never a traceback)."""


class NotFound(MailgatedError):
    """An unknown section, user, category, partner, case, rule…"""


class Invalid(MailgatedError):
    """A value that cannot be accepted (duplicate name, cycle, bad date…)."""


class IllegalTransition(MailgatedError):
    """A case state change the lifecycle does not allow."""
