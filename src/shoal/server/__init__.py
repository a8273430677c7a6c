"""The P2P server role: its link to the console, its registry of clients, its origin."""
