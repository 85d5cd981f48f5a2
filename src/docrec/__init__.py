"""docrec: train one network that reads document pages end to end."""

__version__ = "0.1.0"
