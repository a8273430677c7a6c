"""The lab: network namespaces on this machine, for benchmarks and end-to-end tests."""
