"""The P2P server: activation, client registry, rendezvous, origin of last resort."""
