"""Where images come from: Fashion-MNIST (found wherever it is installed)."""
