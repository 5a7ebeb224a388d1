"""What is kept on disk: atomic writes and index bundles. Never imports torch."""
