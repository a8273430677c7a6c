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

For each phase it prints the answer time of check-ins (first transmission to the
authenticated reply, so a retransmission counts in full) p50/p99/max, the unanswered
ones, and the server's CPU (user + system from ``/proc/PID/stat``) over the phase; also
this generator's own CPU (it shares the machine: on a 2-core machine the figures include
its scheduling delay). Run: ``.venv/bin/python benchmarks/server_checkins.py`` (~2 min;
``--devices 2000`` for a quick one). Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import resource
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


def device_address(number: int) -> str:
    return f"127.100.{number // PER_OFFICE}.{number % PER_OFFICE + 1}"


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Phase:
    """Answer times of the check-ins sent in one phase."""

    name: str
    sent: int = 0
    answers: list[float] = field(default_factory=list)
    timed_out: int = 0
    refused: int = 0

    def report(self, wall: float, server_cpu: float, own_cpu: float) -> dict[str, object]:
        answers = sorted(self.answers)

        def quantile(q: float) -> float:
            return answers[min(len(answers) - 1, int(q * len(answers)))] * 1000 if answers else 0

        return {
            "phase": self.name,
            "check_ins": self.sent,
            "answered": len(answers),
            "timed_out": self.timed_out,
            "refused": self.refused,
            "p50_ms": round(quantile(0.50), 2),
            "p99_ms": round(quantile(0.99), 2),
            "max_ms": round(answers[-1] * 1000, 2) if answers else 0,
            "wall_s": round(wall, 2),
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_share": round(server_cpu / wall, 3) if wall else 0,
            "generator_cpu_s": round(own_cpu, 2),
        }


class Device(asyncio.DatagramProtocol):
    """One simulated client: its key, its address, the real control machine."""

    def __init__(self, bench: Bench, number: int, client: ControlClient) -> None:
        self.bench = bench
        self.number = number
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.registered = False
        self.sent_at: dict[int, tuple[float, Phase]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        self.client.receive_datagram(data, addr, now)
        self.drain(now)

    def check_in(self, now: float, phase: Phase) -> None:
        request_id = self.client.check_in([], now)
        self.sent_at[request_id] = (now, phase)
        phase.sent += 1
        self.drain(now)

    def drain(self, now: float) -> None:
        """Send what the machine queued, act on its events, keep its timer watched."""
        client = self.client
        while (event := client.next_event()) is not None:
            if isinstance(event, ControlAnswered):
                if isinstance(event.request, Register) and isinstance(event.reply, Registered):
                    self.registered = True
                    self.bench.registered += 1
                elif isinstance(event.request, CheckIn):
                    sent = self.sent_at.pop(event.request_id, None)
                    if sent is not None and isinstance(event.reply, CheckInReply):
                        sent[1].answers.append(now - sent[0])
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
        assert self.transport is not None
        for data, addr in client.datagrams_to_send(now):
            self.transport.sendto(data, addr)
        if client.get_timer() is not None:
            self.bench.waiting.add(self)


class Bench:
    def __init__(self, devices: list[Device] | None = None) -> None:
        self.devices: list[Device] = devices or []
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


async def run_load(arguments: argparse.Namespace, deployment: Deployment, pid: int) -> None:
    enrollment = parse_bundle(deployment.enrollment)
    server = (enrollment.server, enrollment.server_port)
    console_keys = [VerifyKey.from_raw(enrollment.console_key)]
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
        transport, device = await loop.create_datagram_endpoint(
            lambda client=client, number=number: Device(bench, number, client),
            local_addr=(device_address(number), 0),
        )
        device.transport = transport
        bench.devices.append(device)
    print(f"{len(bench.devices)} devices, keys and sockets: {time.monotonic() - started:.1f} s")
    timers = asyncio.create_task(bench.timers())
    results: list[dict[str, object]] = []

    async def measured(phase: Phase, body: Coroutine[None, None, None]) -> None:
        cpu, own, wall = server_cpu_seconds(pid), own_cpu_seconds(), time.monotonic()
        await body
        deadline = time.monotonic() + 20
        while any(d.sent_at for d in bench.devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        report = phase.report(
            time.monotonic() - wall, server_cpu_seconds(pid) - cpu, own_cpu_seconds() - own
        )
        results.append(report)
        print(json.dumps(report))

    # 1. register, paced
    cpu, wall = server_cpu_seconds(pid), time.monotonic()
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
        f"{time.monotonic() - wall:.1f} s, server CPU {server_cpu_seconds(pid) - cpu:.1f} s"
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
            bench.devices[number].check_in(time.monotonic(), phase)
            interval = arguments.interval * rng.uniform(0.8, 1.2)
            heapq.heappush(heap, (due + interval, number))

    steady_phase = Phase("steady")
    await measured(steady_phase, steady(steady_phase))

    # 3. burst: every device once within burst_seconds
    async def burst(phase: Phase) -> None:
        begin = time.monotonic()
        times = sorted((rng.uniform(0, arguments.burst_seconds), d.number) for d in bench.devices)
        for offset, number in times:
            await asyncio.sleep(max(0.0, begin + offset - time.monotonic()))
            bench.devices[number].check_in(time.monotonic(), phase)

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
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(results, indent=2) + "\n")
    print(
        "| phase | check-ins | answered | refused | p50 ms | p99 ms | max ms | wall s "
        "| server CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['phase']} | {row['check_ins']} | {row['answered']} | {row['refused']} | "
            f"{row['p50_ms']} | "
            f"{row['p99_ms']} | {row['max_ms']} | {row['wall_s']} | {row['server_cpu_s']} |"
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
        )
        with deployment:
            deployment.start_console()
            deployment.configure(seats=arguments.devices)
            deployment.start_server()
            deployment.wait_for_server()
            pid = deployment.processes["server"].pid
            asyncio.run(run_load(arguments, deployment, pid))
            deployment.check_alive()


if __name__ == "__main__":
    main()
