"""Training: losses, the training loop, checkpoints and the settings dataclass."""
