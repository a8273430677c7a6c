"""The portable code paths (what Windows runs), taken on Linux with SHOAL_PORTABLE=1.

Each check runs in a fresh interpreter, since the switch is read once at import.
``make test`` also runs the client's own tests with the switch on (Makefile
``portable``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def run_portable(code: str, switch: str = "1") -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "SHOAL_PORTABLE": switch},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="compares with Linux paths")
def test_the_switch_turns_udp_offload_off_and_the_socket_still_carries_datagrams() -> None:
    code = """
        from shoal.net.udp import UdpSocket
        a, b = UdpSocket.bind("127.0.0.1", 0), UdpSocket.bind("127.0.0.1", 0)
        a.sock.sendto(b"hello", b.sock.getsockname())
        import select; select.select([b.sock], [], [], 5)
        print(a.gso_enabled, b.gro_enabled, a.offload_note, b.sock.recvfrom(100)[0])
    """
    assert run_portable(code).startswith("False False no UDP offload")
    assert run_portable(code).endswith("b'hello'")
    assert not run_portable(code, switch="0").startswith("False False no UDP offload")


def test_stop_signals_use_plain_handlers_and_still_stop_the_loop() -> None:
    code = """
        import asyncio, os, signal
        from shoal.commands.daemon import install_stop_handlers
        async def main():
            stop = asyncio.Event()
            how = install_stop_handlers(asyncio.get_running_loop(), stop)
            asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stop.wait(), 5)
            print(how, stop.is_set())
        asyncio.run(main())
    """
    assert run_portable(code) == "signal True"


def test_positioned_io_replace_and_fsync_work_without_pread_pwrite() -> None:
    code = """
        import os, tempfile, threading
        from pathlib import Path
        from shoal.core import portable
        assert not portable.POSIX_FILES
        directory = Path(tempfile.mkdtemp())
        path = directory / "data"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        def write(index):
            for _ in range(200):
                portable.pwrite(fd, bytes([index]) * 100, index * 100)
        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        [t.start() for t in threads]; [t.join() for t in threads]
        ok = all(portable.pread(fd, 100, i * 100) == bytes([i]) * 100 for i in range(8))
        buffer = memoryview(bytearray(50))
        got = portable.preadinto(fd, buffer, 750)
        os.close(fd)
        (directory / "new").write_text("new")
        portable.replace(directory / "new", path)
        portable.fsync_directory(directory)
        print(ok, got, bytes(buffer) == bytes([7]) * 50, path.read_text())
    """
    assert run_portable(code) == "True 50 True new"


def test_interface_prefix_comes_from_psutil() -> None:
    code = """
        from shoal.client.service import prefix_of
        print(prefix_of("127.0.0.1"), prefix_of("192.0.2.254"))
    """
    assert run_portable(code) == "8 None"
