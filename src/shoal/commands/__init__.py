"""Command-line commands, one module per area; ``shoal.cli`` collects them."""
