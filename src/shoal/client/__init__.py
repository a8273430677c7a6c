"""The client agent: activation, check-in, swarm download, cache, serving peers."""
