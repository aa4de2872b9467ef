"""The machinery around the training loop: processes and devices, the run directory, checkpoints."""
