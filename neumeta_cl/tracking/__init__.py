"""Where results go: ``results.json`` (source of truth) and a W&B run."""
