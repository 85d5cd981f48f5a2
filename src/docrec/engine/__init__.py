"""Training machinery: runtime setup, checkpoints, logging, the loop."""
