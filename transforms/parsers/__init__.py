"""transforms/parsers."""
