"""Sans-I/O protocol machines: no sockets, no clocks; time is always passed in."""
