"""Pictures: the query result picture and matplotlib figures."""
