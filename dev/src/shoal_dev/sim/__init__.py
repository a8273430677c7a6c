"""A deterministic network simulator with a virtual clock, for the sans-I/O machines."""
