"""One module per CLI command; each defines ``command`` (a click command) and nothing heavy at import."""
