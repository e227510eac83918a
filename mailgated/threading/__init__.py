"""Threading: route a parsed message, match it to its case, find roles, apply it."""
