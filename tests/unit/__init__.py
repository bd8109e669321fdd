"""Functions, settings and parsing, checked without a server."""
