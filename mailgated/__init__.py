"""mailgated: a mail-centric case management daemon."""

__version__ = "0.1.0"
