"""shoal: peer-to-peer software distribution for organisations."""

__version__ = "0.1.0"
