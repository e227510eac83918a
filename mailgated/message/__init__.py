"""Reading one message: parse, body text, charsets, headers, structure, quotes, classification."""
