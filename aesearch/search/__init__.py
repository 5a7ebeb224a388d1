"""The query path: preprocess -> encode -> search -> decode. Never imports torch."""
