"""The client's settings file as ``shoal client enroll`` leaves it.

After enrolling, a device needs no flag: ``shoal client run`` (and the service unit)
reads ``data_dir`` from this file, and the data directory holds the rest (the pinned
console key, the enrollment token mode 0600, the server's address and ports). Settings
an administrator added to the file by hand are kept.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from shoal import config
from shoal.client.enrollment import Enrollment

HEADER = (
    "# shoal client settings (docs/deploy.md lists every key); written by\n"
    "# `shoal client enroll`. The enrollment token is not here: it is in\n"
    "# DATA_DIR/enrollment.json, readable by its owner only.\n"
)


def write_client_settings(
    path: Path, data_dir: Path, enrollment: Enrollment, known: Collection[str]
) -> None:
    """Write ``path`` with ``data_dir`` (absolute), keeping the file's other settings
    (those in ``known``: a file with an unknown key is replaced whole)."""
    try:
        settings = config.load(path, known, required=False)
    except config.ConfigError:
        settings = {}  # a broken file is replaced by a working one
    settings["data_dir"] = str(data_dir.resolve())
    # The server and its ports come from the enrollment: a stale value here would win.
    for key in ("server", "server_port", "enrollment"):
        settings.pop(key, None)
    comment = f"# P2P server {enrollment.server}:{enrollment.server_port}\n"
    config.write_settings(path, HEADER + comment + config.render(settings))
