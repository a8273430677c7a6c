"""Default UDP ports of the peer-to-peer network (the console can set others)."""

DISCOVERY = 41440  # broadcast "who has content X" on the office subnet
CONTROL = 41441  # client -> P2P server requests
FOREGROUND_DATA = 41442  # chunk transfers a user waits for (loss-based congestion control)
BACKGROUND_DATA = 41443  # chunk transfers on spare capacity (LEDBAT)
