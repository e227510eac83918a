"""Safe attachment file names: what a sender names a file is never a path on our side.

Both separators count ("../../etc/passwd" and "C:\\x\\y" keep only their last component),
control and format characters go (NUL, CR/LF, the right-to-left override of
"invoice\\u202Efdp.exe"), characters Windows rejects become "_", leading dots and spaces
go (no hidden files, no ".."), and the name fits 255 bytes of UTF-8 with its extension
kept. Non-ASCII letters stay. An empty result becomes ``attachment-N.ext`` with the
extension of the content type.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

_WINDOWS = re.compile(r'[<>:"|?*]')
_MAX_BYTES = 255
_EXTENSIONS = {
    "text/plain": ".txt",
    "message/rfc822": ".eml",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "text/rfc822-headers": ".txt",
    "application/octet-stream": ".bin",
}


def safe_filename(name: str, content_type: str, index: int) -> str:
    """A file name safe to store and offer for download; never empty."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(_printable(c) for c in name)
    name = _WINDOWS.sub("_", name).lstrip(". ").rstrip(". ")
    name = " ".join(name.split())
    if not name:
        return f"attachment-{index}{extension(content_type)}"
    return _fit(name)


def _printable(char: str) -> str:
    """char itself, a space for any space separator, "" for control and format characters."""
    category = unicodedata.category(char)
    if category == "Zs":
        return " "
    return "" if category[0] in "CZ" else char


def extension(content_type: str) -> str:
    """The usual file extension of a content type (".bin" when unknown)."""
    return _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"


def _fit(name: str) -> str:
    """name cut to 255 bytes of UTF-8, keeping a short extension."""
    if len(name.encode("utf-8")) <= _MAX_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode("utf-8")) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    room = _MAX_BYTES - len(suffix.encode("utf-8"))
    return stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(". ") + suffix
