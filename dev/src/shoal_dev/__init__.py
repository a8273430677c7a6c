"""shoal's development tools: the lab, the benchmarks, the simulator and the demo.

They import ``shoal``; ``shoal`` (what devices install) never imports them. The ``shoal``
command line finds their commands (``shoal lab``, ``shoal sim``, ``shoal bench``) through
the ``shoal.commands`` entry points this distribution (``dev/pyproject.toml``) declares.
"""
