"""HTML mail to readable plain text (html2text, configured for reading, not Markdown).

No wrapping (body_width 0: the history shows the paragraphs as written), no emphasis
marks, images reduced to their alt text, links written as ``text <url>`` (or the bare URL
when the text is the URL), and html2text's Markdown escapes (``1\\.``, ``\\-``) removed.
html2text is imported on first use: most mail has a text/plain part and never needs it.
"""

from __future__ import annotations

import re

_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]+)(?: \"[^\"\n]*\")?\)")
_ESCAPE = re.compile(r"\\([-+.#*_`!\[\]()>\\])")
_CELL_END = re.compile(r"</t[dh]\s*>", re.IGNORECASE)  # layout tables: cells as words
_ROW_END = re.compile(r"</tr\s*>", re.IGNORECASE)  # and rows as lines
_TRAILING = re.compile(r"[^\S\n]+$", re.MULTILINE)  # also the &nbsp; of empty paragraphs
_BLANKS = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """Readable text of an HTML document or fragment."""
    import html2text  # lazy: ~20 ms to import, rarely needed

    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_emphasis = True
    converter.ignore_images = False
    converter.images_to_alt = True
    converter.unicode_snob = True
    converter.ignore_mailto_links = False
    converter.protect_links = False
    converter.use_automatic_links = False
    converter.ignore_tables = True
    text = converter.handle(_CELL_END.sub(" \\g<0>", _ROW_END.sub("\\g<0><br>", html)))
    text = _LINK.sub(_link, text)
    text = _ESCAPE.sub(r"\1", text)
    text = _TRAILING.sub("", text)
    return _BLANKS.sub("\n\n", text).strip()


def _link(match: re.Match[str]) -> str:
    label, url = match.group(1).strip(), match.group(2)
    bare = url.removeprefix("mailto:")
    if not label or label in (url, bare):
        return bare
    return f"{label} <{bare}>"
