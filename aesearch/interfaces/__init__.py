"""How people use aesearch: the command line, the HTTP server and its page, text tables."""
