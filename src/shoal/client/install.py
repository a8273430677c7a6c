"""The install machine: from a verified download to installed software, without I/O.

Theory of operation
-------------------
The agent tells ``InstallMachine`` three things: which contents are assigned with which
install specification (``assigned``: only specifications from an assignment document
whose console signature verified, ``shoal.assignments``), when a content is verified
and whole (``verified``), and how a command it asked for went (``command_finished``).
Time is passed in. The machine answers with effects (``take_commands``: a
``RunCommand`` each, run by the shell off the event loop, ``shoal.client.installer``),
reports for the P2P server (``take_reports``) and a timer (``get_timer``/
``handle_timer``) for retries.

One record per content ID (an application version), its life a transition table
(``TRANSITIONS``: state -> input -> next state, ``None`` = the record is dropped); a
pair the table lacks is a ``LocalProtocolError``::

    pending --verified--> detecting --present--> installed
            (no detect)-> installing --succeeded--> installed
                                     --reboot code--> reboot required
                                     --failed, attempts left--> retry wait --due--> installing
                                     --failed, 3rd attempt or timeout--> failed
    installed / reboot required --withdrawn, with an uninstall command--> uninstalling
        --succeeded--> uninstalled;  --failed--> uninstall failed
    any record --withdrawn, nothing to undo--> dropped

A withdrawal while a command runs waits for the command's end (an installer killed
midway is worse than one that finishes): the record keeps ``assigned = False`` and the
result's transition is followed by the withdrawal.

Persistence: ``to_json``/``from_json``; the shell saves after every change
(``changed``). An attempt is counted when its command starts, so a crash during an
install uses up that attempt; a record restored in ``detecting`` runs detection again,
one in ``installing`` or ``retry wait`` is retried at once (or fails, when its attempts
are used up), one in ``uninstalling`` runs the uninstall again. A finished record
(installed, failed, ...) is never run again for the same content ID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from shoal.core.errors import ShoalError
from shoal.core.ids import ContentId
from shoal.install_spec import (
    PLACEHOLDER,
    InstallSpec,
    InstallSpecInvalid,
    command_argv,
    read_install_spec,
)
from shoal.wire.control import InstallReport, InstallStatus

MAX_ATTEMPTS = 3
REPORT_AGAIN_SECONDS = 30.0
"""A report neither acknowledged nor lost (refused: the server may not have the newest
assignment document yet) is sent again after this long."""
OUTPUT_TAIL_BYTES = 4096
_FORMAT = "shoal-installs-1"


class LocalProtocolError(ShoalError):
    """The machine was driven through a move its transition table lacks (a bug)."""


class InstallStateError(ShoalError):
    """The saved install state is malformed."""


class InstallState(StrEnum):
    PENDING = "pending"
    DETECTING = "detecting"
    INSTALLING = "installing"
    RETRY_WAIT = "retry wait"
    INSTALLED = "installed"
    REBOOT_REQUIRED = "reboot required"
    FAILED = "failed"
    UNINSTALLING = "uninstalling"
    UNINSTALLED = "uninstalled"
    UNINSTALL_FAILED = "uninstall failed"


class Input(Enum):
    VERIFIED = "verified"  # held and whole; the spec has a detection command
    VERIFIED_NO_DETECT = "verified, no detection command"
    PRESENT = "detection: already installed"
    ABSENT = "detection: not installed"
    SUCCEEDED = "command succeeded"
    REBOOT_NEEDED = "command succeeded, reboot required"
    FAILED_RETRY = "command failed, attempts left"
    FAILED_FINAL = "command failed, no attempt left"
    RETRY_DUE = "retry due"
    WITHDRAWN = "withdrawn, nothing to undo"
    WITHDRAWN_UNINSTALL = "withdrawn, uninstall"
    REASSIGNED = "assigned again"


S, In = InstallState, Input
TRANSITIONS: dict[InstallState, dict[Input, InstallState | None]] = {
    S.PENDING: {In.VERIFIED: S.DETECTING, In.VERIFIED_NO_DETECT: S.INSTALLING, In.WITHDRAWN: None},
    S.DETECTING: {In.PRESENT: S.INSTALLED, In.ABSENT: S.INSTALLING, In.FAILED_FINAL: S.FAILED},
    S.INSTALLING: {
        In.SUCCEEDED: S.INSTALLED,
        In.REBOOT_NEEDED: S.REBOOT_REQUIRED,
        In.FAILED_RETRY: S.RETRY_WAIT,
        In.FAILED_FINAL: S.FAILED,
    },
    S.RETRY_WAIT: {In.RETRY_DUE: S.INSTALLING, In.FAILED_FINAL: S.FAILED, In.WITHDRAWN: None},
    S.INSTALLED: {In.WITHDRAWN: None, In.WITHDRAWN_UNINSTALL: S.UNINSTALLING},
    S.REBOOT_REQUIRED: {In.WITHDRAWN: None, In.WITHDRAWN_UNINSTALL: S.UNINSTALLING},
    S.FAILED: {In.WITHDRAWN: None},
    S.UNINSTALLING: {In.SUCCEEDED: S.UNINSTALLED, In.FAILED_FINAL: S.UNINSTALL_FAILED},
    S.UNINSTALLED: {In.REASSIGNED: S.PENDING, In.WITHDRAWN: None},
    S.UNINSTALL_FAILED: {In.REASSIGNED: S.PENDING, In.WITHDRAWN: None},
}
RUNNING = frozenset({S.DETECTING, S.INSTALLING, S.UNINSTALLING})
"""States in which a command of the record runs (the shell is executing it)."""
FINISHED = frozenset(state for state in S if state not in RUNNING | {S.PENDING, S.RETRY_WAIT})


WIRE_STATUS = {
    S.PENDING: InstallStatus.INSTALLING,  # never reported (see take_reports)
    S.DETECTING: InstallStatus.INSTALLING,
    S.INSTALLING: InstallStatus.INSTALLING,
    S.RETRY_WAIT: InstallStatus.INSTALLING,
    S.INSTALLED: InstallStatus.INSTALLED,
    S.REBOOT_REQUIRED: InstallStatus.REBOOT_REQUIRED,
    S.FAILED: InstallStatus.FAILED,
    S.UNINSTALLING: InstallStatus.UNINSTALLING,
    S.UNINSTALLED: InstallStatus.UNINSTALLED,
    S.UNINSTALL_FAILED: InstallStatus.UNINSTALL_FAILED,
}


class Purpose(StrEnum):
    DETECT = "detect"
    INSTALL = "install"
    UNINSTALL = "uninstall"


@dataclass(frozen=True, slots=True)
class RunCommand:
    """Effect: stage the content (if ``stage_from`` is set and the staged file is not
    there yet), run ``argv`` with ``timeout`` seconds (then kill its process tree),
    keep the last ``OUTPUT_TAIL_BYTES`` of its output; remove the staged file after if
    ``remove_staged``. Answer with ``CommandFinished``."""

    content_id: ContentId
    purpose: Purpose
    argv: tuple[str, ...]
    timeout: float
    staged: str
    stage_from: str | None
    """The verified file (cache or decrypted plaintext); None: the cache's data file."""
    remove_staged: bool = False
    decrypt: bool = False
    """A confidential content: staging decrypts it from the cache (``stage_from`` None)."""


@dataclass(frozen=True, slots=True)
class CommandFinished:
    """Event: a ``RunCommand`` ran. ``exit_code`` None: it did not run to an exit (could
    not be staged or started, or killed at its timeout: ``timed_out``)."""

    command: RunCommand
    exit_code: int | None
    output_tail: str = ""
    timed_out: bool = False
    error: str = ""


@dataclass(slots=True)
class InstallRecord:
    content_id: ContentId
    spec: InstallSpec
    state: InstallState = InstallState.PENDING
    attempts: int = 0
    exit_code: int | None = None
    output_tail: str = ""
    note: str = ""
    assigned: bool = True
    retry_at: float | None = None
    source: str | None = None
    decrypt: bool = False
    """Confidential: staged by decrypting the cached ciphertext."""
    reported: bool = False
    """The server acknowledged the report of the current state."""
    sending: bool = False
    """A report of the current state is on its way (not acknowledged, not lost yet)."""
    sent_at: float = 0.0
    updated_at: float = 0.0

    def report(self) -> InstallReport:
        return InstallReport(
            self.content_id,
            WIRE_STATUS[self.state],
            self.attempts,
            self.exit_code,
            self.output_tail,
        )


@dataclass(frozen=True, slots=True)
class InstallPolicy:
    max_attempts: int = MAX_ATTEMPTS
    first_retry_seconds: float = 30.0
    backoff_factor: float = 4.0
    """Retry n waits first_retry_seconds * backoff_factor ** (n - 1): 30 s, then 2 min."""


class InstallMachine:
    """Sans-I/O installs of the assigned, verified contents (see the module docstring)."""

    def __init__(self, staging_dir: str, policy: InstallPolicy | None = None) -> None:
        self.staging_dir = staging_dir.rstrip("/")
        self.policy = policy or InstallPolicy()
        self.records: dict[ContentId, InstallRecord] = {}
        self._commands: list[RunCommand] = []
        self.changed = False
        """Something worth saving happened since the shell last saved (it clears it)."""

    # ------------------------------------------------------------ inputs

    def assigned(self, specs: dict[ContentId, InstallSpec | None], now: float) -> None:
        """The contents assigned now (from an accepted, signed document) and their install
        specifications; contents with a record and no longer assigned are withdrawn."""
        for content_id, spec in specs.items():
            record = self.records.get(content_id)
            if spec is None:
                if record is not None and record.state is S.PENDING:
                    del self.records[content_id]  # its specification was removed
                continue
            if record is None:
                self.records[content_id] = InstallRecord(content_id, spec, updated_at=now)
                self.changed = True
                continue
            record.assigned = True
            if record.state in (S.UNINSTALLED, S.UNINSTALL_FAILED):
                record.spec, record.attempts, record.exit_code = spec, 0, None
                record.output_tail = ""
                self._move(record, In.REASSIGNED, now)
            elif record.state is S.PENDING:
                record.spec = spec  # the newest signed specification, until it starts
        for content_id in [cid for cid in self.records if cid not in specs]:
            record = self.records[content_id]
            if record.assigned:
                record.assigned = False
                self.changed = True
                if record.state not in RUNNING:
                    self._withdraw(record, now)

    def verified(
        self, content_id: ContentId, source: str | None, now: float, *, decrypt: bool = False
    ) -> None:
        """The content is held whole and verified (``source``: where, if not the cache's
        data file; ``decrypt``: confidential, staged by decrypting it). Starts its install
        unless the record already went past pending (a finished install is never
        repeated)."""
        record = self.records.get(content_id)
        if record is None or record.state is not S.PENDING or not record.assigned:
            return
        record.source = source
        record.decrypt = decrypt
        if record.spec.detect is not None:
            self._move(record, In.VERIFIED, now)
            self._run(record, Purpose.DETECT, record.spec.detect)
        else:
            self._start_attempt(record, now, In.VERIFIED_NO_DETECT)

    def command_finished(self, finished: CommandFinished, now: float) -> None:
        """The shell's answer to a ``RunCommand``."""
        command = finished.command
        record = self.records.get(command.content_id)
        if record is None or record.state not in RUNNING:
            return
        spec = record.spec
        if command.purpose is Purpose.DETECT:
            if finished.exit_code == 0:
                record.note = "detection: already installed; the command was not run"
                self._move(record, In.PRESENT, now)
            elif finished.exit_code is None:
                self._finish(record, finished, In.FAILED_FINAL, now)
            else:
                self._start_attempt(record, now, In.ABSENT)
        elif command.purpose is Purpose.INSTALL:
            code = finished.exit_code
            if code is not None and code in spec.success_codes:
                self._finish(record, finished, In.SUCCEEDED, now)
            elif code is not None and code in spec.reboot_codes:
                self._finish(record, finished, In.REBOOT_NEEDED, now)
            elif record.attempts < self.policy.max_attempts:
                self._finish(record, finished, In.FAILED_RETRY, now)
                delay = self.policy.first_retry_seconds * self.policy.backoff_factor ** (
                    record.attempts - 1
                )
                record.retry_at = now + delay
                record.note += f"; attempt {record.attempts + 1} in {delay:.0f} s"
            else:
                self._finish(record, finished, In.FAILED_FINAL, now)
        else:
            outcome = In.SUCCEEDED if finished.exit_code == 0 else In.FAILED_FINAL
            self._finish(record, finished, outcome, now)
        if (
            command.purpose is not Purpose.UNINSTALL
            and not record.assigned
            and record.state not in RUNNING
        ):
            self._withdraw(record, now)  # withdrawn while the command ran

    def get_timer(self) -> float | None:
        return min(
            (r.retry_at for r in self.records.values() if r.retry_at is not None), default=None
        )

    def handle_timer(self, now: float) -> None:
        for record in list(self.records.values()):
            if record.retry_at is not None and record.retry_at <= now:
                record.retry_at = None
                self._start_attempt(record, now, In.RETRY_DUE)

    # ----------------------------------------------------------- outputs

    def take_commands(self) -> list[RunCommand]:
        commands, self._commands = self._commands, []
        return commands

    def take_reports(self, now: float) -> list[InstallReport]:
        """Reports to send: records whose state the server has not acknowledged and that
        are not on their way (or were sent ``REPORT_AGAIN_SECONDS`` ago). Pending ones
        are not reported: the console knows from the check-ins that an assigned content
        is pending or downloading."""
        reports = []
        for record in self.records.values():
            if record.reported or record.state is S.PENDING:
                continue
            if record.sending and now - record.sent_at < REPORT_AGAIN_SECONDS:
                continue
            record.sending, record.sent_at = True, now
            reports.append(record.report())
        return reports

    def acknowledged(self, report: InstallReport) -> None:
        """The server noted ``report``; a record changed since is reported again."""
        record = self.records.get(report.content_id)
        if record is not None and record.report() == report:
            record.reported, record.sending = True, False

    def report_lost(self, report: InstallReport) -> None:
        """The server never answered ``report``: the next ``take_reports`` sends it again."""
        record = self.records.get(report.content_id)
        if record is not None and record.report() == report:
            record.sending = False

    def record_status(self, content_id: ContentId) -> dict[str, Any] | None:
        """What ``shoal client status`` shows of one record (None: no record)."""
        record = self.records.get(content_id)
        if record is None:
            return None
        return {
            "state": record.state.value,
            "attempts": record.attempts,
            "exit_code": record.exit_code,
            "output_tail": record.output_tail,
            "note": record.note,
            "retry_at": record.retry_at,
            "uninstall": record.spec.uninstall is not None,
        }

    def status(self, downloading: set[ContentId]) -> list[dict[str, Any]]:
        """Every record; a pending one whose content is on its way shows ``downloading``."""
        rows = []
        for content_id in self.records:
            row = {"content_id": content_id.hex, **(self.record_status(content_id) or {})}
            if row["state"] == S.PENDING.value and content_id in downloading:
                row["state"] = "downloading"
            rows.append(row)
        return rows

    # ---------------------------------------------------------- internals

    def staged_path(self, record: InstallRecord) -> str:
        return f"{self.staging_dir}/{record.content_id.hex}{record.spec.extension}"

    def _move(self, record: InstallRecord, event: Input, now: float) -> InstallState | None:
        moves = TRANSITIONS[record.state]
        if event not in moves:
            raise LocalProtocolError(
                f"install {record.content_id.short}: {event} in {record.state}"
            )
        target = moves[event]
        record.updated_at = now
        record.reported = record.sending = False
        self.changed = True
        if target is None:
            del self.records[record.content_id]
            return None
        record.state = target
        return target

    def _run(self, record: InstallRecord, purpose: Purpose, template: str) -> None:
        staged = self.staged_path(record)
        self._commands.append(
            RunCommand(
                record.content_id,
                purpose,
                tuple(command_argv(template, staged)),
                float(record.spec.timeout_seconds),
                staged,
                None if purpose is Purpose.UNINSTALL else record.source,
                # The staged copy is kept only while an uninstall command may need it.
                remove_staged=purpose is Purpose.UNINSTALL
                or (
                    purpose is Purpose.INSTALL and PLACEHOLDER not in (record.spec.uninstall or "")
                ),
                decrypt=record.decrypt,
            )
        )

    def _start_attempt(self, record: InstallRecord, now: float, event: Input) -> None:
        if record.attempts >= self.policy.max_attempts:
            self._move(record, In.FAILED_FINAL, now)
            return
        self._move(record, event, now)
        record.attempts += 1
        record.note = f"attempt {record.attempts} of {self.policy.max_attempts}"
        self._run(record, Purpose.INSTALL, record.spec.command)

    def _finish(
        self, record: InstallRecord, finished: CommandFinished, event: Input, now: float
    ) -> None:
        record.exit_code = finished.exit_code
        record.output_tail = finished.output_tail[-OUTPUT_TAIL_BYTES:]
        purpose = finished.command.purpose.value
        if finished.timed_out:
            record.note = f"{purpose}: killed after {finished.command.timeout:.0f} s (timeout)"
        elif finished.error:
            record.note = f"{purpose}: {finished.error}"
        else:
            record.note = f"{purpose}: exit code {finished.exit_code}"
        self._move(record, event, now)

    def _withdraw(self, record: InstallRecord, now: float) -> None:
        if record.state in (S.INSTALLED, S.REBOOT_REQUIRED) and record.spec.uninstall:
            self._move(record, In.WITHDRAWN_UNINSTALL, now)
            self._run(record, Purpose.UNINSTALL, record.spec.uninstall)
        else:
            self._move(record, In.WITHDRAWN, now)

    # -------------------------------------------------------- persistence

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "records": [
                    {
                        "content_id": record.content_id.hex,
                        "spec": record.spec.to_json(),
                        "state": record.state.value,
                        "attempts": record.attempts,
                        "exit_code": record.exit_code,
                        "output_tail": record.output_tail,
                        "note": record.note,
                        "assigned": record.assigned,
                        "source": record.source,
                        "decrypt": record.decrypt,
                    }
                    for record in self.records.values()
                ],
            },
            sort_keys=True,
            indent=1,
        )

    def restore(self, text: str, now: float) -> None:
        """Load saved records (see the module docstring for interrupted commands)."""
        try:
            document = json.loads(text)
            if document.get("format") != _FORMAT:
                raise ValueError(f"format {document.get('format')!r} is not {_FORMAT}")
            for raw in document["records"]:
                record = InstallRecord(
                    ContentId.from_hex(raw["content_id"]),
                    read_install_spec(raw["spec"]),
                    InstallState(raw["state"]),
                    int(raw["attempts"]),
                    None if raw["exit_code"] is None else int(raw["exit_code"]),
                    str(raw["output_tail"]),
                    str(raw["note"]),
                    bool(raw["assigned"]),
                    source=raw.get("source"),
                    decrypt=bool(raw.get("decrypt", False)),
                    updated_at=now,
                )
                self.records[record.content_id] = record
        except (ValueError, KeyError, TypeError, AttributeError, InstallSpecInvalid) as error:
            raise InstallStateError(f"install state is malformed ({error})") from None
        for record in list(self.records.values()):
            if record.state is S.DETECTING:
                record.note = "detection interrupted by a restart: run again"
                self._run(record, Purpose.DETECT, record.spec.detect or "")
            elif record.state in (S.INSTALLING, S.RETRY_WAIT):
                record.note = "interrupted by a restart"
                record.state = S.RETRY_WAIT
                record.retry_at = now
            elif record.state is S.UNINSTALLING:
                record.note = "uninstall interrupted by a restart: run again"
                self._run(record, Purpose.UNINSTALL, record.spec.uninstall or "")
