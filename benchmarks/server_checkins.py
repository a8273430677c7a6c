"""The P2P server's control path at estate scale: thousands of devices on loopback.

Issue 10, point 5. Starts a real console and a real ``shoal server run`` process on
loopback (``shoal_dev.lab.deployment`` with a ``LoopbackPlacement``), then simulates
``--devices`` clients in this process, each with its own device key, its own loopback
address (127.100.K.J, one office of 250 per /24) and the client's real control machine
(``shoal.client.control.ControlClient``: HELLO, certificate check, REGISTER, then
authenticated check-ins with retransmissions). Phases:

1. **register**: every device registers once (paced at ``--register-rate`` per second;
   a REGISTER that times out is sent again, as the real client does);
2. **steady**: every device checks in every ``--interval`` seconds with +-20% jitter
   (the first at a random point of the interval), for ``--steady-seconds``;
3. **burst**: every device checks in once at a random moment of ``--burst-seconds``
   (issue 10's target: 10,000 check-ins within 5 s, p99 <= 200 ms);
4. **nudge**: a package is uploaded and assigned to everyone; the server nudges every
   device and each checks in at once, as the real client does.

The burst's check-ins are made ahead of time (each device's control machine is asked
for its datagram at the moment it is due, ``now`` being passed in), so that at send time
the generator only calls ``sendto``.

For each phase it prints the answer time of check-ins p50/p95/p99/max, from just before
the first transmission's ``sendto`` to the reply's arrival in the generator's socket,
stamped by the kernel (``SO_TIMESTAMPNS``): the time the generator takes to read and
check a reply is not counted, a retransmission is (in full). Beside them: the
unanswered ones, the server's CPU (user + system from ``/proc/PID/stat``) and share of
one core over the phase, the console's CPU, the load average at the phase's end, and
whether the generator kept up: its own CPU share, and how late it sent (p99 of send time
minus due time; ``generator_bound`` when that passes 50 ms or its CPU share 0.9, then the
phase offered less load than asked and its figures flatter the server). The generator and
the server share the machine's cores. Run: ``.venv/bin/python
benchmarks/server_checkins.py`` (~2 min; ``--devices 2000`` for a quick one). Loopback
only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import resource
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path

from shoal.client.control import (
    ControlAnswered,
    ControlClient,
    ControlTimedOut,
    Nudged,
)
from shoal.client.enrollment import parse_bundle
from shoal.core.identity import DeviceKey
from shoal.core.signing import VerifyKey
from shoal.wire.control import CheckIn, CheckInReply, Register, Registered
from shoal_dev.lab.deployment import Deployment, LoopbackPlacement, OfficeSetup

PER_OFFICE = 250
TICK = 0.05
GENERATOR_LATE = 0.050
"""Sends later than this (p99) mean the generator could not keep the schedule."""
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python 3.11 lacks the name
_TIMESPEC = struct.Struct("qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


def device_address(number: int) -> str:
    return f"127.100.{number // PER_OFFICE}.{number % PER_OFFICE + 1}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quantile_ms(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted seconds, in milliseconds (0 when empty)."""
    if not values:
        return 0.0
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


@dataclass
class Phase:
    """Answer times of the check-ins sent in one phase, and how late they were sent."""

    name: str
    sent: int = 0
    answers: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    timed_out: int = 0
    refused: int = 0

    def report(
        self, wall: float, server_cpu: float, console_cpu: float, own_cpu: float
    ) -> dict[str, object]:
        answers = sorted(self.answers)
        late = sorted(self.late)
        late_p99 = quantile_ms(late, 0.99)
        own_share = round(own_cpu / wall, 3) if wall else 0
        return {
            "phase": self.name,
            "check_ins": self.sent,
            "answered": len(answers),
            "timed_out": self.timed_out,
            "refused": self.refused,
            "p50_ms": quantile_ms(answers, 0.50),
            "p95_ms": quantile_ms(answers, 0.95),
            "p99_ms": quantile_ms(answers, 0.99),
            "max_ms": round(answers[-1] * 1000, 2) if answers else 0,
            "wall_s": round(wall, 2),
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_share": round(server_cpu / wall, 3) if wall else 0,
            "console_cpu_s": round(console_cpu, 2),
            "generator_cpu_s": round(own_cpu, 2),
            "generator_cpu_share": own_share,
            "send_late_p99_ms": late_p99,
            "generator_bound": late_p99 > GENERATOR_LATE * 1000 or own_share > 0.9,
            "load_average": [round(load, 2) for load in os.getloadavg()],
        }


class Device:
    """One simulated client: its key, its socket and address, the real control machine."""

    def __init__(
        self, bench: Bench, number: int, client: ControlClient, sock: socket.socket
    ) -> None:
        self.bench = bench
        self.number = number
        self.client = client
        self.sock = sock
        self.sent_at: dict[int, tuple[float, Phase]] = {}
        """Request ID -> (wall clock just before its first ``sendto``, phase)."""

    def on_readable(self) -> None:
        """Read every reply waiting; each is timed by the kernel's arrival stamp."""
        while True:
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(2048, _ANCILLARY)
            except BlockingIOError:
                return
            arrived = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack(value[: _TIMESPEC.size])
                    arrived = seconds + nanoseconds / 1e9
            now = time.monotonic()
            self.client.receive_datagram(data, addr, now)
            self.drain(now, arrived)

    def check_in(self, now: float, phase: Phase) -> None:
        request_id = self.client.check_in([], now)
        self.sent_at[request_id] = (time.time(), phase)
        phase.sent += 1
        self.drain(now)

    def prepare_check_in(self, due: float) -> tuple[int, list[tuple[bytes, tuple[str, int]]]]:
        """The check-in due at ``due`` (monotonic), made now: its request ID and datagrams
        (the machine's timers run from ``due``, as if it were sent then)."""
        request_id = self.client.check_in([], due)
        return request_id, self.client.datagrams_to_send(due)

    def send_prepared(
        self, request_id: int, datagrams: list[tuple[bytes, tuple[str, int]]], phase: Phase
    ) -> None:
        self.sent_at[request_id] = (time.time(), phase)
        phase.sent += 1
        for data, addr in datagrams:
            self.sock.sendto(data, addr)
        self.bench.waiting.add(self)

    def drain(self, now: float, arrived: float = 0.0) -> None:
        """Send what the machine queued, act on its events, keep its timer watched."""
        client = self.client
        while (event := client.next_event()) is not None:
            if isinstance(event, ControlAnswered):
                if isinstance(event.request, Register) and isinstance(event.reply, Registered):
                    self.bench.registered += 1
                elif isinstance(event.request, CheckIn):
                    sent = self.sent_at.pop(event.request_id, None)
                    if sent is not None and isinstance(event.reply, CheckInReply):
                        sent[1].answers.append(arrived - sent[0])
                    elif sent is not None:
                        sent[1].refused += 1  # e.g. UNKNOWN_DEVICE: not registered yet
            elif isinstance(event, ControlTimedOut):
                if isinstance(event.request, Register):  # as the real client: again
                    client.register("0.1.0", f"sim-{self.number}", 24, now)
                sent = self.sent_at.pop(event.request_id, None)
                if sent is not None:
                    sent[1].timed_out += 1
            elif isinstance(event, Nudged) and self.bench.nudge_phase is not None:
                self.check_in(now, self.bench.nudge_phase)
        for data, addr in client.datagrams_to_send(now):
            self.sock.sendto(data, addr)
        if client.get_timer() is not None:
            self.bench.waiting.add(self)


class Bench:
    def __init__(self) -> None:
        self.devices: list[Device] = []
        self.waiting: set[Device] = set()
        self.registered = 0
        self.nudge_phase: Phase | None = None

    async def timers(self) -> None:
        """Retransmissions and HELLOs of the devices that wait for something."""
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for device in list(self.waiting):
                timer = device.client.get_timer()
                if timer is None:
                    self.waiting.discard(device)
                elif timer <= now:
                    device.client.handle_timer(now)
                    self.waiting.discard(device)
                    device.drain(now)


def open_device_socket(number: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((device_address(number), 0))
    sock.setblocking(False)
    return sock


async def run_load(arguments: argparse.Namespace, deployment: Deployment) -> None:
    enrollment = parse_bundle(deployment.enrollment)
    server = (enrollment.server, enrollment.server_port)
    console_keys = [VerifyKey.from_raw(enrollment.console_key)]
    pid = deployment.processes["server"].pid
    console_pid = deployment.processes["console"].pid
    loop = asyncio.get_running_loop()
    rng = random.Random(arguments.seed)
    bench = Bench()
    started = time.monotonic()
    for number in range(arguments.devices):
        client = ControlClient(
            server=server,
            device_key=DeviceKey.generate(),
            enrollment_token=enrollment.enrollment_token,
            console_keys=console_keys,
            now=started,
            counter_start=number * 1_000_000,
        )
        device = Device(bench, number, client, open_device_socket(number))
        loop.add_reader(device.sock.fileno(), device.on_readable)
        bench.devices.append(device)
    print(f"{len(bench.devices)} devices, keys and sockets: {time.monotonic() - started:.1f} s")
    timers = asyncio.create_task(bench.timers())
    results: list[dict[str, object]] = []

    async def measured(phase: Phase, body: Coroutine[None, None, None]) -> None:
        cpu, console, own = cpu_seconds(pid), cpu_seconds(console_pid), own_cpu_seconds()
        wall = time.monotonic()
        await body
        deadline = time.monotonic() + 20
        while any(d.sent_at for d in bench.devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        report = phase.report(
            time.monotonic() - wall,
            cpu_seconds(pid) - cpu,
            cpu_seconds(console_pid) - console,
            own_cpu_seconds() - own,
        )
        results.append(report)
        print(json.dumps(report), flush=True)

    # 1. register, paced
    cpu, wall = cpu_seconds(pid), time.monotonic()
    spacing = 1.0 / arguments.register_rate
    for index, device in enumerate(bench.devices):
        now = time.monotonic()
        device.client.handle_timer(now)  # the HELLO
        device.client.register("0.1.0", f"sim-{device.number}", 24, now)
        device.drain(now)
        await asyncio.sleep(max(0.0, started_at(wall, index, spacing) - time.monotonic()))
    while bench.registered < len(bench.devices) and time.monotonic() - wall < 120:
        await asyncio.sleep(0.2)
    print(
        f"registered {bench.registered}/{len(bench.devices)} in "
        f"{time.monotonic() - wall:.1f} s, server CPU {cpu_seconds(pid) - cpu:.1f} s"
    )

    # 2. steady check-ins
    async def steady(phase: Phase) -> None:
        begin = time.monotonic()
        heap = [(begin + rng.uniform(0, arguments.interval), d.number) for d in bench.devices]
        heapq.heapify(heap)
        end = begin + arguments.steady_seconds
        while heap and heap[0][0] < end:
            due, number = heapq.heappop(heap)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            phase.late.append(max(0.0, time.monotonic() - due))
            bench.devices[number].check_in(time.monotonic(), phase)
            interval = arguments.interval * rng.uniform(0.8, 1.2)
            heapq.heappush(heap, (due + interval, number))

    steady_phase = Phase("steady")
    await measured(steady_phase, steady(steady_phase))

    # 3. burst: every device once within burst_seconds, its datagram made ahead of time
    async def burst(phase: Phase) -> None:
        offsets = sorted((rng.uniform(0, arguments.burst_seconds), d.number) for d in bench.devices)
        begin = time.monotonic() + 0.5 + len(offsets) * 100e-6  # room to prepare them
        prepared = [
            (
                begin + offset,
                bench.devices[number],
                *bench.devices[number].prepare_check_in(begin + offset),
            )
            for offset, number in offsets
        ]
        index = 0
        while index < len(prepared):
            await asyncio.sleep(max(0.0, prepared[index][0] - time.monotonic()))
            now = time.monotonic()
            while index < len(prepared) and prepared[index][0] <= now:
                due, device, request_id, datagrams = prepared[index]
                phase.late.append(now - due)
                device.send_prepared(request_id, datagrams, phase)
                index += 1

    burst_phase = Phase("burst")
    await measured(burst_phase, burst(burst_phase))

    # 4. nudge after an assignment
    nudge_phase = bench.nudge_phase = Phase("nudge")

    async def nudge(phase: Phase) -> None:
        package = deployment.work / "package.bin"
        package.write_bytes(os.urandom(1 << 20))
        await asyncio.to_thread(deployment.upload_and_assign, package)
        deadline = time.monotonic() + 60
        while phase.sent < len(bench.devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    await measured(nudge_phase, nudge(nudge_phase))
    timers.cancel()
    for device in bench.devices:
        loop.remove_reader(device.sock.fileno())
        device.sock.close()
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(results, indent=2) + "\n")
    print(
        "| phase | check-ins | answered | refused | p50 ms | p95 ms | p99 ms | max ms | wall s "
        "| server CPU s | generator bound | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['phase']} | {row['check_ins']} | {row['answered']} | {row['refused']} | "
            f"{row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | {row['max_ms']} | "
            f"{row['wall_s']} | {row['server_cpu_s']} | {row['generator_bound']} | "
            f"{row['load_average'][0]} |"  # type: ignore[index]
        )


def started_at(begin: float, index: int, spacing: float) -> float:
    return begin + (index + 1) * spacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--steady-seconds", type=float, default=30.0)
    parser.add_argument("--burst-seconds", type=float, default=5.0)
    parser.add_argument("--register-rate", type=float, default=1000.0)
    parser.add_argument(
        "--report-seconds",
        type=int,
        default=30,
        help="the server's registry report to the console (the lab's 2 s, with 10,000 "
        "devices, keeps the console's SQLite locked: uploads fail)",
    )
    parser.add_argument(
        "--server-src",
        help="run the server from this source tree (its src/ first on PYTHONPATH), e.g. a "
        "worktree of main, to compare it with this one under the same generator",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the phases' figures here")
    parser.add_argument("--work", help="keep the console's and server's files and logs here")
    arguments = parser.parse_args()
    offices = (arguments.devices + PER_OFFICE - 1) // PER_OFFICE
    with tempfile.TemporaryDirectory(prefix="shoal-checkins-") as temporary:
        work = arguments.work or temporary
        deployment = Deployment(
            LoopbackPlacement(clients=0),
            Path(work),
            [OfficeSetup(f"estate-{k}", f"127.100.{k}.0/24") for k in range(offices)],
            central_subnet="127.0.0.0/24",
            loopback=True,
            checkin_seconds=int(arguments.interval),
            server_arguments=["--report-seconds", str(arguments.report_seconds)],
            server_command=(
                (
                    "env",
                    f"PYTHONPATH={Path(arguments.server_src).resolve() / 'src'}",
                    sys.executable,
                    "-m",
                    "shoal",
                )
                if arguments.server_src
                else ()
            ),
        )
        with deployment:
            deployment.start_console()
            deployment.configure(seats=arguments.devices)
            deployment.start_server()
            deployment.wait_for_server()
            asyncio.run(run_load(arguments, deployment))
            deployment.check_alive()


if __name__ == "__main__":
    main()
