"""Measuring search quality: evaluation, metrics, the latent map."""
