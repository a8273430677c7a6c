"""An idle client is small (issue 11: <= 40 MB idle): it gives back the memory its
transfers used, and it loads nothing it does not need."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoal.client.memory import _glibc, release_idle_memory

MIB = 1 << 20
glibc_only = pytest.mark.skipif(
    _glibc() is None, reason="glibc's malloc only (elsewhere release_idle_memory does nothing)"
)


def resident_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 1e6


@glibc_only
def test_the_chunk_buffers_of_a_finished_transfer_are_given_back_when_idle() -> None:
    """Chunk buffers come from the heap (reused at once while a transfer runs); freed,
    their pages stay resident until the idle client trims the heap."""
    batch = bytearray(4 * MIB)  # a 4 MiB read batch, freed: glibc now serves
    del batch  # 1 MiB chunk buffers from the heap (its dynamic mmap threshold)
    spacers: list[bytes] = []
    buffers: list[bytearray] = []
    for _ in range(32):
        buffers.append(bytearray(MIB))
        buffers[-1][::4096] = b"y" * len(buffers[-1][::4096])  # touched, as a chunk is
        spacers.append(bytes(600))  # small objects between them: the heap fragments
    before = resident_mb()
    del buffers
    kept = resident_mb() > before - 24  # freed; glibc may have trimmed the heap's top
    released = release_idle_memory()
    assert resident_mb() < before - 24
    assert released or not kept


# What a device's `shoal client run` must not load: each is code an idle client would
# keep resident for nothing (docs/network.md "Disk, memory and CPU").
NOT_IN_A_CLIENT = {
    "ssl": "asyncio's TLS support: the client speaks UDP only (~1.2 MB)",
    "_hashlib": "a second OpenSSL, the system's: chunks are hashed by cryptography's (~3.5 MB)",
    "shoal.commands.console": "another role's commands (~0.4 MB with the next ones)",
    "shoal.commands.server": "another role's commands",
    "shoal.commands.license": "another role's commands",
    "cryptography.hazmat.primitives.serialization": "every key type (~1 MB)",
    "zipfile": "a client release only (~1.4 MB with shutil, bz2, lzma)",
    "shutil": "a client release only",
    "importlib.metadata": "other distributions' commands (~3 MB)",
    "shoal_dev": "the lab and benchmarks (not installed on devices)",
}


def test_a_client_process_loads_no_tls_no_other_role_and_no_release_tools(
    tmp_path: Path,
) -> None:
    """`shoal client run`'s process, up to its agent's start (here: an unenrolled device,
    refused once the agent's modules are loaded), holds none of ``NOT_IN_A_CLIENT``."""
    probe = (
        "import sys\n"
        "from shoal.cli import main\n"
        f"sys.argv = ['shoal', 'client', 'run', '--data-dir', {str(tmp_path / 'data')!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'shoal.client.service' in sys.modules, 'the agent was not loaded'\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "not enrolled" in result.stderr
    loaded = set(result.stdout.split())
    assert {name: why for name, why in NOT_IN_A_CLIENT.items() if name in loaded} == {}


def test_lean_imports_refuse_tls_hash_right_and_leave_ssl_importable() -> None:
    """In a fresh process: asyncio imported without TLS says so when TLS is asked for
    (never a plain connection instead); hashlib and hmac without OpenSSL give the right
    digests (RFC 4231 test case 2); and `import ssl` still works after."""
    probe = (
        "import sys\n"
        "from shoal.client.lean_imports import import_lean\n"
        "assert import_lean()\n"
        "assert 'ssl' not in sys.modules and '_hashlib' not in sys.modules\n"
        "import hashlib, hmac\n"
        "tag = hmac.new(b'Jefe', b'what do ya want for nothing?', hashlib.sha256).hexdigest()\n"
        "print(tag)\n"
        "from shoal.core.digest import sha256\n"
        "assert sha256(b'abc') == hashlib.sha256(b'abc').digest()\n"
        "import asyncio, socket, ssl\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "async def connect():\n"
        "    await asyncio.get_running_loop().create_connection(\n"
        "        asyncio.Protocol, *listener.getsockname(), ssl=ssl.create_default_context())\n"
        "try:\n"
        "    asyncio.run(connect())\n"
        "except RuntimeError as error:\n"
        "    print(error)\n"
        "assert not import_lean()  # imported already: nothing changes\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    tag, error = result.stdout.splitlines()
    assert tag == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert "ssl module" in error and "not available" in error
