"""The seed AutoEncoder: its architecture, the PyTorch network, the NumPy runtime and checkpoints."""
