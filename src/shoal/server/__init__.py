"""The P2P server: its link to the console, client registry, rendezvous, origin."""
