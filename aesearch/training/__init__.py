"""Training the AutoEncoder (imports torch)."""
