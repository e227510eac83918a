"""Threading: parse, classify, route and match a message to its case."""
