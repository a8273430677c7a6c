"""The asyncio shell's install runner: ``RunCommand`` effects, off the event loop.

``run_command`` is the one piece of code that turns a ``RunCommand`` into a
``CommandFinished``: it stages the verified file (copied to a temporary name, fsynced,
renamed: an installer never sees half a file; a confidential content is decrypted from
the cache into that temporary name instead of copied, ``StageFile`` from
``shoal.client.plaintext.stage_plaintext``, so the copy every install pays becomes the
decryption and no plaintext exists before it), starts the command in a new session
(POSIX: its own process group; Windows: a new process group) with stdin closed and
stdout+stderr merged, keeps the last ``OUTPUT_TAIL_BYTES`` of its output while it runs,
and when the timeout expires kills the whole process tree (``killpg``; Windows:
``taskkill /T /F``), so an installer's children do not outlive it.

``InstallRunner`` runs the effects one at a time, in order, in one thread (two
installers at once fight over package databases and locks), and hands each result back
to the event loop with ``call_soon_threadsafe``. For a command that decrypts, it asks
``unsealer`` on the event loop, when the command is submitted, how to stage it (the
content key is in the agent's state, which only the loop touches). ``save_installs``
writes the install machine's state atomically (from a thread as well).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shoal.client.install import OUTPUT_TAIL_BYTES, CommandFinished, Purpose, RunCommand
from shoal.client.self_upgrade import own_program
from shoal.core.errors import ShoalError
from shoal.core.files import write_private
from shoal.core.ids import ContentId

log = logging.getLogger("shoal.client")

INSTALLS_FILE = "installs.json"
STAGING_DIRECTORY = "staging"
_READ_BLOCK = 65536

StageFile = Callable[[Path], None]
"""Write the verified content, whole, to this path (atomically; kept if already there)."""
Unsealer = Callable[[ContentId], StageFile | None]
"""How to stage a confidential content by decrypting it; None: its key is not known."""


def stage(source: Path, staged: Path) -> None:
    """Copy the verified ``source`` to ``staged`` (atomically; kept if already there)."""
    if staged.exists():
        return
    staged.parent.mkdir(parents=True, exist_ok=True)
    temporary = staged.with_name(staged.name + ".part")
    with source.open("rb") as reader, temporary.open("wb") as writer:
        while block := reader.read(_READ_BLOCK):  # not shutil: ~1.4 MB idle (self_upgrade)
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
    os.replace(temporary, staged)


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        subprocess.run(
            ["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False
        )
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the session's group: children too


def run_command(
    command: RunCommand, data_path: Callable[[], Path], decrypt: StageFile | None = None
) -> CommandFinished:
    """Stage, run with the timeout, keep the output's tail (see the module docstring).
    ``data_path`` names the cache's data file when the command carries no source;
    ``decrypt`` stages a command that decrypts (without it, such a command fails before
    anything runs: ciphertext is never handed to an installer)."""
    staged = Path(command.staged)
    if command.purpose is not Purpose.UNINSTALL:
        try:
            if not command.decrypt:
                stage(Path(command.stage_from) if command.stage_from else data_path(), staged)
            elif decrypt is None:
                return CommandFinished(
                    command, None, error="cannot decrypt: this device's content key is not here"
                )
            else:
                decrypt(staged)
        except (OSError, ShoalError) as error:
            return CommandFinished(command, None, error=f"cannot stage the file: {error}")
    options: dict[str, object] = (
        {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        if sys.platform == "win32"
        else {"start_new_session": True}
    )
    try:
        process = subprocess.Popen(
            list(own_program(command.argv)),  # `shoal` = this client's own program
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=staged.parent,
            **options,  # type: ignore[call-overload]
        )
    except OSError as error:
        return CommandFinished(command, None, error=f"cannot start {command.argv[0]!r}: {error}")
    tail = bytearray()
    assert process.stdout is not None
    stdout = process.stdout

    def read_output() -> None:
        while chunk := stdout.read1(_READ_BLOCK):
            tail.extend(chunk)
            del tail[:-OUTPUT_TAIL_BYTES]

    reader = threading.Thread(target=read_output, name="shoal-install-output", daemon=True)
    reader.start()
    timed_out = False
    try:
        process.wait(command.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(process)
        process.wait()
    # A child the installer left running (a service it started) may hold the pipe: its
    # output is not waited for, and it is not killed.
    reader.join(5.0)
    if not reader.is_alive():
        stdout.close()
    output = bytes(tail[-OUTPUT_TAIL_BYTES:]).decode("utf-8", "replace")
    if command.remove_staged:
        staged.unlink(missing_ok=True)
    if timed_out:
        return CommandFinished(command, None, output, timed_out=True)
    return CommandFinished(command, process.returncode, output)


def save_installs(data_dir: Path, text: str) -> None:
    write_private(data_dir / INSTALLS_FILE, text.encode())


def load_installs(data_dir: Path) -> str | None:
    try:
        return (data_dir / INSTALLS_FILE).read_text()
    except FileNotFoundError:
        return None


class InstallRunner:
    """Run ``RunCommand`` effects in order in one thread; report each to ``on_finished``
    on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        data_path: Callable[[RunCommand], Path],
        on_finished: Callable[[CommandFinished], None],
        unsealer: Unsealer | None = None,
    ) -> None:
        self._loop = loop
        self._data_path = data_path
        self._on_finished = on_finished
        self._unsealer = unsealer
        self._queue: queue.SimpleQueue[tuple[RunCommand, StageFile | None] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="shoal-install", daemon=True)
        self._thread.start()

    def submit(self, commands: list[RunCommand]) -> None:
        """Queue ``commands`` (on the event loop: a decrypting one's key is looked up now)."""
        for command in commands:
            decrypt = None
            if command.decrypt and self._unsealer is not None:
                decrypt = self._unsealer(command.content_id)
            self._queue.put((command, decrypt))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            command, decrypt = item
            started = time.monotonic()
            log.info("install %s: %s %s", command.content_id.short, command.purpose, command.argv)
            finished = run_command(command, functools.partial(self._data_path, command), decrypt)
            log.info(
                "install %s: %s ended (exit code %s%s) after %.1f s",
                command.content_id.short,
                command.purpose,
                finished.exit_code,
                ", timeout" if finished.timed_out else "",
                time.monotonic() - started,
            )
            try:
                self._loop.call_soon_threadsafe(self._on_finished, finished)
            except RuntimeError:  # the loop closed: the next start restores the record
                return

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the command running now (if any); later ones are not started."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join(timeout)
