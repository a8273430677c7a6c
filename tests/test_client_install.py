"""The install machine (fake clock, effects by hand) and its runner (real processes)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from shoal.client.install import (
    TRANSITIONS,
    CommandFinished,
    Input,
    InstallMachine,
    InstallPolicy,
    InstallState,
    Purpose,
    RunCommand,
)
from shoal.client.installer import run_command
from shoal.core.ids import ContentId
from shoal.install_spec import InstallSpec, InstallSpecInvalid, read_install_spec
from shoal.wire.control import InstallStatus

CONTENT = ContentId(bytes(range(32)))
SPEC = InstallSpec(command="installer --quiet {file}", extension=".pkg", uninstall="remover x")


def machine() -> InstallMachine:
    return InstallMachine("/var/lib/shoal/staging", InstallPolicy(first_retry_seconds=10.0))


def answer(installs: InstallMachine, exit_code: int | None, now: float, **extra: object) -> None:
    (command,) = installs.take_commands()
    installs.command_finished(CommandFinished(command, exit_code, **extra), now)  # type: ignore[arg-type]


def test_a_verified_content_is_staged_with_its_extension_and_installed() -> None:
    installs = machine()
    installs.assigned({CONTENT: SPEC}, 0.0)
    assert installs.take_commands() == [] and installs.take_reports(0.0) == []
    installs.verified(CONTENT, None, 1.0)
    (command,) = installs.take_commands()
    staged = f"/var/lib/shoal/staging/{CONTENT.hex}.pkg"
    assert command.argv == ("installer", "--quiet", staged)
    assert (command.purpose, command.staged, command.timeout) == (Purpose.INSTALL, staged, 3600.0)
    assert command.remove_staged  # the uninstall command does not name {file}
    installs.command_finished(CommandFinished(command, 0, "done\n"), 2.0)
    assert installs.records[CONTENT].state is InstallState.INSTALLED
    (report,) = installs.take_reports(2.0)
    assert (report.status, report.attempts, report.exit_code) == (InstallStatus.INSTALLED, 1, 0)
    installs.verified(CONTENT, None, 3.0)  # verified again (a restart): not repeated
    assert installs.take_commands() == []


def test_a_failing_install_is_retried_with_backoff_three_times_then_failed() -> None:
    installs = machine()
    installs.assigned({CONTENT: SPEC}, 0.0)
    installs.verified(CONTENT, None, 0.0)
    answer(installs, 2, 1.0, output_tail="E: broken\n")
    record = installs.records[CONTENT]
    assert record.state is InstallState.RETRY_WAIT and installs.get_timer() == 11.0
    installs.handle_timer(10.0)
    assert installs.take_commands() == []  # not yet
    installs.handle_timer(11.0)
    answer(installs, 2, 12.0)
    assert installs.get_timer() == 12.0 + 40.0  # 10 s, then 4x
    installs.handle_timer(52.0)
    answer(installs, 2, 53.0, output_tail="E: still broken\n")
    assert (record.state, record.attempts, record.exit_code) == (InstallState.FAILED, 3, 2)
    assert record.output_tail == "E: still broken\n"
    assert installs.get_timer() is None
    installs.handle_timer(1000.0)
    assert installs.take_commands() == []


def test_a_reboot_code_and_a_timeout() -> None:
    installs = machine()
    installs.assigned({CONTENT: SPEC}, 0.0)
    installs.verified(CONTENT, None, 0.0)
    answer(installs, 3010, 1.0)
    assert installs.records[CONTENT].state is InstallState.REBOOT_REQUIRED
    other = ContentId(bytes(32))
    installs.assigned({CONTENT: SPEC, other: SPEC}, 2.0)
    installs.verified(other, None, 2.0)
    answer(installs, None, 3.0, timed_out=True)
    assert installs.records[other].state is InstallState.RETRY_WAIT
    assert "timeout" in installs.records[other].note


def test_detection_that_finds_it_installed_runs_no_install() -> None:
    installs = machine()
    installs.assigned({CONTENT: InstallSpec(command="x {file}", detect="test -e /opt/x")}, 0.0)
    installs.verified(CONTENT, None, 0.0)
    (command,) = installs.take_commands()
    assert command.purpose is Purpose.DETECT and command.argv == ("test", "-e", "/opt/x")
    installs.command_finished(CommandFinished(command, 0), 1.0)
    assert installs.records[CONTENT].state is InstallState.INSTALLED
    assert installs.records[CONTENT].attempts == 0
    assert installs.take_commands() == []


def test_withdrawal_uninstalls_and_waits_for_a_running_install() -> None:
    installs = machine()
    installs.assigned({CONTENT: SPEC}, 0.0)
    installs.verified(CONTENT, None, 0.0)
    (install,) = installs.take_commands()
    installs.assigned({}, 1.0)  # withdrawn while the installer runs
    assert installs.take_commands() == []
    installs.command_finished(CommandFinished(install, 0), 2.0)
    (uninstall,) = installs.take_commands()
    assert uninstall.purpose is Purpose.UNINSTALL and uninstall.remove_staged
    assert uninstall.argv == ("remover", "x")
    installs.command_finished(CommandFinished(uninstall, 0), 3.0)
    assert installs.records[CONTENT].state is InstallState.UNINSTALLED


def test_withdrawal_without_an_uninstall_command_drops_the_record() -> None:
    installs = machine()
    spec = InstallSpec(command="x {file}")
    installs.assigned({CONTENT: spec}, 0.0)
    installs.verified(CONTENT, None, 0.0)
    answer(installs, 0, 1.0)
    installs.assigned({}, 2.0)
    assert CONTENT not in installs.records and installs.take_commands() == []


def test_a_restart_keeps_finished_records_and_retries_an_interrupted_install() -> None:
    installs = machine()
    finished, running = CONTENT, ContentId(bytes(32))
    installs.assigned({finished: SPEC, running: SPEC}, 0.0)
    installs.verified(finished, None, 0.0)
    answer(installs, 0, 1.0)
    installs.verified(running, None, 2.0)
    assert len(installs.take_commands()) == 1  # ... and the device crashes meanwhile
    saved = installs.to_json()
    again = machine()
    again.restore(saved, 500.0)
    assert again.records[finished].state is InstallState.INSTALLED
    assert again.take_commands() == []
    again.verified(finished, None, 500.0)
    again.handle_timer(500.0)
    (command,) = again.take_commands()
    assert command.content_id == running and again.records[running].attempts == 2


def test_the_table_is_closed_and_a_missing_move_raises() -> None:
    from shoal.client.install import LocalProtocolError

    assert set(TRANSITIONS) == set(InstallState)
    installs = machine()
    installs.assigned({CONTENT: SPEC}, 0.0)
    with pytest.raises(LocalProtocolError):
        installs._move(installs.records[CONTENT], Input.RETRY_DUE, 0.0)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"command": "dpkg -i x.deb"}, "command"),
        ({"command": "x {file}", "extension": "../evil"}, "extension"),
        ({"command": "x {file}", "timeout_seconds": 0}, "timeout_seconds"),
        ({"command": "x {file}", "success_codes": [0], "reboot_codes": [0]}, "reboot_codes"),
        ({"command": "x {file}", "name": "Firefox"}, "name"),
        ({"command": "x '{file}"}, "command"),
    ],
)
def test_an_invalid_spec_is_refused_by_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(InstallSpecInvalid, match=f"^{field}:"):
        read_install_spec(raw)


# --- the runner: real processes ---------------------------------------------------------

pytestmark_posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell commands")


def command(tmp_path: Path, template: list[str], timeout: float = 10.0) -> RunCommand:
    source = tmp_path / "cache.data"
    source.write_bytes(b"package bytes")
    return RunCommand(
        CONTENT,
        Purpose.INSTALL,
        tuple(template),
        timeout,
        str(tmp_path / "staging" / "x.tar"),
        str(source),
    )


@pytestmark_posix
def test_the_runner_stages_runs_and_keeps_the_last_4_kib(tmp_path: Path) -> None:
    script = "head -c 10000 /dev/zero | tr '\\0' a; echo; cat \"$1\"; exit 3"
    finished = run_command(
        command(tmp_path, ["sh", "-c", script, "sh", str(tmp_path / "staging" / "x.tar")]),
        lambda: tmp_path / "unused",
    )
    assert finished.exit_code == 3 and not finished.timed_out
    assert len(finished.output_tail) == 4096
    assert finished.output_tail.endswith("a\npackage bytes")
    assert (tmp_path / "staging" / "x.tar").read_bytes() == b"package bytes"


@pytest.mark.serial  # a bound in seconds
@pytestmark_posix
def test_the_runner_kills_the_whole_process_tree_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    finished = run_command(command(tmp_path, ["sh", "-c", script], 1.0), lambda: tmp_path)
    assert finished.timed_out and finished.exit_code is None
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the installer's child outlived the timeout")


@pytestmark_posix
def test_a_command_that_cannot_start_is_an_error_not_a_crash(tmp_path: Path) -> None:
    finished = run_command(command(tmp_path, ["/nonexistent/installer"]), lambda: tmp_path)
    assert finished.exit_code is None and "cannot start" in finished.error


def test_client_status_shows_each_install_and_the_output_of_a_failed_one() -> None:
    from shoal.client.service import render_installs

    installs = machine()
    downloading = ContentId(bytes(32))
    installs.assigned({CONTENT: SPEC, downloading: SPEC}, 0.0)
    installs.verified(CONTENT, None, 0.0)
    for attempt in range(3):
        answer(installs, 1, float(attempt), output_tail="line 1\nE: no space left\n")
        installs.handle_timer(1000.0)
    rows = {row["content_id"]: row for row in installs.status({downloading})}
    assert rows[downloading.hex]["state"] == "downloading"
    assert (rows[CONTENT.hex]["state"], rows[CONTENT.hex]["exit_code"]) == ("failed", 1)
    text = "\n".join(render_installs(list(rows.values())))
    assert f"install {CONTENT.hex[:12]}  failed  (attempts 3, exit code 1)" in text
    assert "    | E: no space left" in text
    assert f"install {downloading.hex[:12]}  downloading  (attempts 0)" in text


def test_an_unacknowledged_report_is_sent_again_and_an_acknowledged_one_not() -> None:
    installs = machine()
    installs.assigned({CONTENT: SPEC}, 0.0)
    installs.verified(CONTENT, None, 0.0)
    answer(installs, 0, 1.0)
    (first,) = installs.take_reports(1.0)
    assert installs.take_reports(2.0) == []  # on its way
    (again,) = installs.take_reports(31.0)  # refused or unanswered: sent again
    assert again == first
    installs.report_lost(again)
    (lost,) = installs.take_reports(32.0)
    installs.acknowledged(lost)
    assert installs.take_reports(1000.0) == []


@pytestmark_posix
def test_the_install_runner_reports_on_the_loop_and_the_records_survive_a_restart(
    tmp_path: Path,
) -> None:
    import asyncio

    from shoal.client.installer import InstallRunner, load_installs, save_installs

    installs = InstallMachine(str(tmp_path / "staging"))
    spec = InstallSpec(command="sh -c 'cp \"$1\" ../installed.txt' sh {file}", extension=".txt")
    installs.assigned({CONTENT: spec}, 0.0)
    source = tmp_path / "cache.data"
    source.write_bytes(b"version 1")
    installs.verified(CONTENT, None, 0.0)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def finished(event: CommandFinished) -> None:
            installs.command_finished(event, loop.time())
            done.set()

        runner = InstallRunner(loop, lambda command: source, finished)
        try:
            runner.submit(installs.take_commands())
            await asyncio.wait_for(done.wait(), 30)
        finally:
            await asyncio.to_thread(runner.close)

    asyncio.run(run())
    assert installs.records[CONTENT].state is InstallState.INSTALLED
    assert (tmp_path / "installed.txt").read_bytes() == b"version 1"
    save_installs(tmp_path, installs.to_json())
    restarted = InstallMachine(str(tmp_path / "staging"))
    restarted.restore(load_installs(tmp_path) or "", 0.0)
    restarted.assigned({CONTENT: spec}, 1.0)
    restarted.verified(CONTENT, None, 1.0)
    assert restarted.records[CONTENT].state is InstallState.INSTALLED
    assert restarted.take_commands() == []  # not run again
    assert oct((tmp_path / "installs.json").stat().st_mode & 0o777) == "0o600"
