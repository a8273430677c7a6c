"""Benchmarks that print figures: the processes they run and how they measure them."""
