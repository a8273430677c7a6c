"""``shoal bench share``: how a shoal transfer shares one link with a TCP flow.

Theory of operation
-------------------
Issue 9's targets compare rates over the same bottleneck, so every run has the same
shape: a first flow from time 0, a late TCP flow from ``late_start`` (the first one has
reached its rate by then), both until ``late_start + together``; rates are averaged
from ``settle`` seconds after the late start.

- Foreground: shoal then TCP; the reference TCP then TCP; shoal alone (its queue).
- Background: shoal then TCP; TCP alone; shoal alone.

*Lab* (root): three network namespaces -- senders, a router, receivers -- joined by
two veth pairs (names start with ``--namespace-prefix``, ``shs-`` by default, then the
bench's process id; addresses in ``--address-base``.1.0/24 and .2.0/24, 10.79 by
default, so that several people can run the lab on one machine). The router
forwards, and its link towards the receivers is the bottleneck: tc HTB at R Mbit/s
with a deep byte FIFO (1000 full-size packets, as the issue's links). The queue sits
in a router, as on a WAN: ``--queue-at sender`` puts it on the senders' own interface
instead, which is where ``shoal bench transfer`` shapes, and where Linux keeps a local
TCP sender to a few packets in the queue (TCP small queues; a full qdisc is local
congestion to TCP) while a UDP sender may fill it. The shoal flow is the transfer
benchmark's pair of processes (``shoal_dev.bench.transfer_peer``, with ``--mode``); a
TCP flow is a plain Python socket pair (this module's ``tcp-send`` / ``tcp-receive``
roles) whose sender uses ``--tcp-congestion``: CUBIC by default, Linux's and Windows'
default and the simulator's TCP (the host's own default may be another: BBR keeps
only a few milliseconds of queue, see docs/network.md). Each TCP receiver samples its
own byte count; the parent samples the receivers' interface, and shoal's rate is what
crossed it minus the TCP flows' packets. Every namespace and process is removed when a
run ends, also on an error or a signal.

*Simulator* (``--sim``): the same runs in virtual time (``shoal_dev.sim.share``) at
each of ``--rtt`` milliseconds (default 10, 50, 100, 200), with ``shoal_dev.sim.tcp`` as
the TCP flow (CUBIC).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.core.chunking import DEFAULT_CHUNK_SIZE
from shoal.core.packing import pack_stream
from shoal.protocol.transfer import Mode
from shoal_dev.bench.transfer import BenchmarkFailed, write_random_file
from shoal_dev.lab.netns import (
    LabError,
    add_address,
    check_name,
    create_namespace,
    create_veth_pair,
    delete_namespace,
    list_namespaces,
    namespace_command,
    run_ip,
    run_tc,
    stop_processes,
)
from shoal_dev.sim.share import (
    PACKET_BYTES,
    SCENARIOS,
    FlowSeries,
    ShareRun,
    ShareSetup,
    run_scenarios,
    verdicts,
)

Report = Callable[[str], None]
NAMESPACE_PREFIX = "shs-"
SHOAL_PORT = 47100
TCP_PORT = 47200
READY_SECONDS = 30.0
#: IP + TCP headers (with timestamps) + Ethernet header per full TCP segment.
_TCP_FRAME_OVERHEAD = 14 + 20 + 32
_TCP_SEND_BLOCK = 1 << 16


@dataclass(frozen=True, slots=True)
class ShareOptions:
    rate_mbit: float = 50.0
    mode: Mode = Mode.FOREGROUND
    repeat: int = 1
    late_start: float = 10.0
    together: float = 30.0
    settle: float = 5.0
    bin_seconds: float = 0.5
    buffer_packets: int = 1000
    queue_at: str = "router"
    sim: bool = False
    rtts_ms: tuple[float, ...] = (10.0, 50.0, 100.0, 200.0)
    seed: int = 1
    engine_settings: tuple[str, ...] = ()
    workdir: Path | None = None
    namespace_prefix: str = NAMESPACE_PREFIX
    #: The lab's first two octets: senders in BASE.1.0/24, receivers in BASE.2.0/24.
    address_base: str = "10.79"
    tcp_congestion: str = "cubic"
    #: Lab: keep each shoal sender's controller trace (``cc_trace``) and both shoal
    #: processes' results here, as SCENARIO-RUN-{trace.jsonl,serve.json,fetch.json}.
    trace_dir: Path | None = None

    def setup(self, rtt: float = 0.0, seed: int | None = None) -> ShareSetup:
        return ShareSetup(
            rate_mbit=self.rate_mbit, rtt=rtt, buffer_packets=self.buffer_packets,
            late_start=self.late_start, together=self.together, settle=self.settle,
            bin_seconds=self.bin_seconds, seed=self.seed if seed is None else seed,
        )  # fmt: skip


# ---------------------------------------------------------------------------- the lab


@dataclass
class RouterLab:
    """Senders -> router -> receivers; the router's link to the receivers is shaped."""

    stem: str
    senders: str
    router: str
    receivers: str
    sender_ip: str = "10.79.1.1"
    receiver_ip: str = "10.79.2.2"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: The shaped interface and its namespace; its rate in bytes/s.
    shaped: tuple[str, str] = ("", "")
    rate_bytes: float = 0.0

    @property
    def receiver_device(self) -> str:
        return self.stem + "d"

    @classmethod
    def create(
        cls, rate_mbit: float, buffer_packets: int, queue_at: str,
        prefix: str = NAMESPACE_PREFIX, address_base: str = "10.79",
    ) -> RouterLab:  # fmt: skip
        stem = f"{prefix}{os.getpid()}"
        senders_net, receivers_net = f"{address_base}.1", f"{address_base}.2"
        lab = cls(stem, check_name(stem + "s", prefix), check_name(stem + "r", prefix),
                  check_name(stem + "d", prefix), sender_ip=f"{senders_net}.1",
                  receiver_ip=f"{receivers_net}.2")  # fmt: skip
        try:
            for name in (lab.senders, lab.router, lab.receivers):
                create_namespace(name)
                run_ip("link", "set", "lo", "up", namespace=name)
            # Device names: the namespace's name plus the side (at most 15 characters).
            create_veth_pair(stem + "s", lab.senders, stem + "a", lab.router)
            create_veth_pair(stem + "b", lab.router, stem + "d", lab.receivers)
            add_address(stem + "s", f"{senders_net}.1/24", lab.senders)
            add_address(stem + "a", f"{senders_net}.2/24", lab.router)
            add_address(stem + "b", f"{receivers_net}.1/24", lab.router)
            add_address(stem + "d", f"{receivers_net}.2/24", lab.receivers)
            run_ip("route", "add", f"{receivers_net}.0/24", "via", f"{senders_net}.2",
                   namespace=lab.senders)  # fmt: skip
            run_ip("route", "add", f"{senders_net}.0/24", "via", f"{receivers_net}.1",
                   namespace=lab.receivers)  # fmt: skip
            subprocess.run(
                namespace_command(lab.router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
                check=True,
            )
            device, namespace = (
                (stem + "b", lab.router) if queue_at == "router" else (stem + "s", lab.senders)
            )
            lab.shaped = (device, namespace)
            lab.rate_bytes = rate_mbit * 1e6 / 8
            # RFC-free plumbing: one HTB class at R, and a byte FIFO of N full packets
            # under it (bytes, not packets: GSO and GRO make "a packet" up to 64 KB).
            run_tc("qdisc", "replace", "dev", device, "root", "handle", "1:", "htb",
                   "default", "10", namespace=namespace)  # fmt: skip
            run_tc("class", "add", "dev", device, "parent", "1:", "classid", "1:10", "htb",
                   "rate", f"{rate_mbit}mbit", "ceil", f"{rate_mbit}mbit",
                   namespace=namespace)  # fmt: skip
            run_tc("qdisc", "add", "dev", device, "parent", "1:10", "handle", "10:", "bfifo",
                   "limit", str(buffer_packets * PACKET_BYTES), namespace=namespace)  # fmt: skip
        except BaseException:
            lab.close()
            raise
        return lab

    def spawn(self, namespace: str, argv: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            namespace_command(namespace, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        stop_processes(self.processes)
        for process in self.processes:
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self.processes.clear()

    def close(self) -> None:
        self.stop()
        for name in (self.senders, self.router, self.receivers):
            delete_namespace(name)

    def received_bytes(self) -> int:
        """Bytes the receivers' interface has taken in (frames, Ethernet header included)."""
        output = run_ip("-s", "-j", "link", "show", "dev", self.receiver_device,
                        namespace=self.receivers)  # fmt: skip
        return int(json.loads(output)[0]["stats64"]["rx"]["bytes"])

    def queue_ms(self) -> float:
        """Queuing delay at the bottleneck now: the FIFO's backlog at the link's rate."""
        device, namespace = self.shaped
        qdiscs = json.loads(run_tc("-s", "-j", "qdisc", "show", "dev", device,
                                   namespace=namespace))  # fmt: skip
        backlog = sum(int(q.get("backlog", 0)) for q in qdiscs if q.get("kind") == "bfifo")
        return backlog / self.rate_bytes * 1000


def cleanup_share_orphans(prefix: str = NAMESPACE_PREFIX) -> list[str]:
    """Remove ``PREFIXPID?`` namespaces whose creating process is gone."""
    removed = []
    for name in list_namespaces(prefix):
        owner = name[len(prefix) : -1]
        if not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            delete_namespace(name)
            removed.append(name)
        except PermissionError:
            pass
    return removed


def _python(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]


def _wait_ready(process: subprocess.Popen[bytes], what: str) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.1)
        if readable and process.stdout.readline().startswith(b"ready"):
            return
        if process.poll() is not None:
            break
    error = b"" if process.stderr is None else process.stderr.read()
    raise BenchmarkFailed(f"the {what} process did not start: {error.decode()[-500:]}")


@dataclass
class _LabFlow:
    name: str
    kind: str
    start: float
    result: Path | None = None  # TCP receivers' samples


def _run_lab(
    lab: RouterLab, options: ShareOptions, first: str | None, late: str | None,
    package: tuple[Path, Path], workdir: Path, scenario: str, number: int = 1,
) -> ShareRun:  # fmt: skip
    """One scenario in the lab; the rates are sampled every ``bin_seconds``."""
    setup = options.setup()
    source, manifest = package
    trace_stem = None if options.trace_dir is None else options.trace_dir / f"{scenario}-{number}"
    flows: list[_LabFlow] = []
    #: (start, namespace, argv) of each flow's active end, started on time below.
    launch: list[tuple[float, str, list[str]]] = []
    for role, kind, start in (("first", first, 0.0), ("late", late, setup.late_start)):
        if kind is None:
            continue
        if kind == "shoal":
            mode = options.mode.name.lower()
            server = lab.spawn(lab.senders, _python(
                "shoal_dev.bench.transfer_peer", "serve", "--manifest", str(manifest),
                "--file", str(source), "--bind", f"{lab.sender_ip}:{SHOAL_PORT}",
                "--result", str(workdir / "serve.json"),
                *[f"--engine={setting}" for setting in options.engine_settings],
                *([] if trace_stem is None else ["--trace", f"{trace_stem}-trace.jsonl"]),
            ))  # fmt: skip
            _wait_ready(server, "shoal sender")
            fetch = _python(
                "shoal_dev.bench.transfer_peer", "fetch", "--manifest", str(manifest),
                "--peer", f"{lab.sender_ip}:{SHOAL_PORT}", "--bind", f"{lab.receiver_ip}:0",
                "--out", str(workdir / "copy.bin"), "--result", str(workdir / "fetch.json"),
                "--mode", mode, "--timeout", str(setup.end + 60),
                *[f"--engine={setting}" for setting in options.engine_settings],
            )  # fmt: skip
            flows.append(_LabFlow(f"shoal-{mode}", "shoal", start))
            launch.append((start, lab.receivers, fetch))
        else:
            port = TCP_PORT + len(flows)
            result = workdir / f"tcp-{role}-{scenario}.json"
            receiver = lab.spawn(lab.receivers, _python(
                "shoal_dev.bench.share", "tcp-receive", "--bind", f"{lab.receiver_ip}:{port}",
                "--result", str(result),
            ))  # fmt: skip
            _wait_ready(receiver, "TCP receiver")
            send = _python("shoal_dev.bench.share", "tcp-send", "--peer",
                           f"{lab.receiver_ip}:{port}", "--seconds",
                           str(setup.end - start + 1),
                           "--congestion", options.tcp_congestion)  # fmt: skip
            flows.append(_LabFlow(f"tcp-{role}", "tcp", start, result))
            launch.append((start, lab.senders, send))
    began = time.monotonic()
    link_samples: list[tuple[float, int]] = [(0.0, lab.received_bytes())]
    queue_ms: list[float] = []
    pending = sorted(launch, key=lambda item: item[0])
    next_sample = setup.bin_seconds
    while True:
        now = time.monotonic() - began
        while pending and pending[0][0] <= now:
            _, namespace, argv = pending.pop(0)
            lab.spawn(namespace, argv)
        if now >= next_sample:
            link_samples.append((next_sample, lab.received_bytes()))
            queue_ms.append(lab.queue_ms())
            next_sample += setup.bin_seconds
            if next_sample > setup.end + 1e-9:
                break
        time.sleep(max(0.0, min(next_sample, pending[0][0] if pending else next_sample) - now))
    lab.stop()  # the TCP receivers write their samples on SIGTERM
    if trace_stem is not None:
        for role in ("serve", "fetch"):
            if (workdir / f"{role}.json").exists():
                (workdir / f"{role}.json").replace(f"{trace_stem}-{role}.json")
    series: list[FlowSeries] = []
    times = [when for when, _ in link_samples[1:]]
    tcp_frames = [0.0] * len(times)
    for flow in flows:
        if flow.kind != "tcp":
            continue
        assert flow.result is not None
        samples = json.loads(flow.result.read_text())["samples"]
        cumulative = [_at(samples, began + when) for when in [0.0, *times]]
        rates = [
            (cumulative[index + 1] - cumulative[index]) * 8 / setup.bin_seconds / 1e6
            for index in range(len(times))
        ]
        for index in range(len(times)):
            segments = (cumulative[index + 1] - cumulative[index]) / 1448
            tcp_frames[index] += (cumulative[index + 1] - cumulative[index]) + (
                segments * _TCP_FRAME_OVERHEAD
            )
        series.append(FlowSeries(flow.name, "tcp", flow.start, times, rates))
    for flow in flows:
        if flow.kind == "shoal":
            rates = [
                max(0.0, (link_samples[i + 1][1] - link_samples[i][1] - tcp_frames[i]))
                * 8 / setup.bin_seconds / 1e6
                for i in range(len(times))
            ]  # fmt: skip
            series.insert(0 if flow.start == 0 else len(series),
                          FlowSeries(flow.name, "shoal", flow.start, times, rates))  # fmt: skip
    series.sort(key=lambda item: item.start)
    return ShareRun(scenario, series, queue_ms)


def _at(samples: list[list[float]], when: float) -> float:
    """Cumulative bytes at monotonic time ``when``, interpolated between samples."""
    if not samples or when <= samples[0][0]:
        return 0.0
    for (t0, b0), (t1, b1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            return b0 + (b1 - b0) * (when - t0) / max(t1 - t0, 1e-9)
    return float(samples[-1][1])


@contextlib.contextmanager
def _package(options: ShareOptions, workdir: Path, report: Report) -> Iterator[tuple[Path, Path]]:
    """A random file big enough for shoal to send at the full rate for the whole run."""
    size = int(options.rate_mbit * 1e6 / 8 * (options.late_start + options.together + 10))
    source = workdir / "package.bin"
    report(f"writing {size / 1e6:.0f} MB of random data for the shoal flow")
    write_random_file(source, size, options.seed)
    with open(source, "rb", buffering=0) as stream:
        manifest = pack_stream(stream, DEFAULT_CHUNK_SIZE)
    manifest_file = workdir / "package.manifest"
    manifest_file.write_bytes(manifest.body())
    yield source, manifest_file


def run_lab_share(options: ShareOptions, report: Report) -> dict[str, Any]:
    """Every scenario of ``options.mode``, ``repeat`` times (alternating), in the lab."""
    if os.geteuid() != 0:
        raise BenchmarkFailed("the lab needs root (network namespaces); try --sim")
    cleanup_share_orphans(options.namespace_prefix)
    if options.trace_dir is not None:
        options.trace_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="shoal-share-", dir=options.workdir))
    document = _document(options, "lab")
    try:
        with _package(options, workdir, report) as package:
            for number in range(1, options.repeat + 1):
                runs: dict[str, ShareRun] = {}
                for scenario, (first, late) in SCENARIOS[options.mode].items():
                    report(f"lab run {number}/{options.repeat}: {scenario}")
                    lab = RouterLab.create(
                        options.rate_mbit,
                        options.buffer_packets,
                        options.queue_at,
                        options.namespace_prefix,
                        options.address_base,
                    )
                    try:
                        runs[scenario] = _run_lab(
                            lab, options, first, late, package, workdir, scenario, number
                        )
                    finally:
                        lab.close()
                document["runs"].append(_summarise(runs, options, 0.0, options.setup()))
    finally:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    _conclude(document)
    return document


# ------------------------------------------------------------------------ simulator


def run_sim_share(options: ShareOptions, report: Report) -> dict[str, Any]:
    """Every scenario of ``options.mode`` at every RTT, ``repeat`` seeds, in virtual time."""
    document = _document(options, "sim")
    for rtt_ms in options.rtts_ms:
        for number in range(1, options.repeat + 1):
            report(f"simulator: RTT {rtt_ms:g} ms, run {number}/{options.repeat}")
            # The simulator is deterministic: each repetition starts the late flow a
            # little later (0.37 s more each time), so runs differ in phase.
            setup = dataclasses.replace(
                options.setup(rtt_ms / 1000, seed=options.seed + number - 1),
                late_start=options.late_start + 0.37 * (number - 1),
            )
            runs = run_scenarios(setup, options.mode)
            document["runs"].append(_summarise(runs, options, rtt_ms, setup))
    _conclude(document)
    return document


# ------------------------------------------------------------------------- reporting


def _document(options: ShareOptions, where: str) -> dict[str, Any]:
    return {
        "where": where, "rate_mbit": options.rate_mbit, "mode": options.mode.name.lower(),
        "buffer_packets": options.buffer_packets, "late_start_s": options.late_start,
        "together_s": options.together, "settle_s": options.settle,
        "queue_at": options.queue_at if where == "lab" else "router",
        "tcp_congestion": options.tcp_congestion if where == "lab" else "cubic", "runs": [],
    }  # fmt: skip


def _summarise(
    runs: dict[str, ShareRun], options: ShareOptions, rtt_ms: float, setup: ShareSetup
) -> dict[str, Any]:
    figures = verdicts(runs, options.mode, options.rate_mbit, setup.measure_from, setup.end)
    return {"rtt_ms": rtt_ms, "verdict": figures,
            "scenarios": {name: run.as_dict() for name, run in runs.items()}}  # fmt: skip


def _conclude(document: dict[str, Any]) -> None:
    """Medians and spread of the verdict figures per RTT."""
    summary = []
    for rtt in sorted({run["rtt_ms"] for run in document["runs"]}):
        verdicts_here = [run["verdict"] for run in document["runs"] if run["rtt_ms"] == rtt]
        row: dict[str, Any] = {"rtt_ms": rtt, "runs": len(verdicts_here)}
        for key, value in verdicts_here[0].items():
            if isinstance(value, float):
                values = [verdict[key] for verdict in verdicts_here]
                row[key] = {"median": statistics.median(values), "min": min(values),
                            "max": max(values)}  # fmt: skip
        row["met_runs"] = sum(1 for verdict in verdicts_here if verdict["met"])
        row["target"] = verdicts_here[0]["target"]
        summary.append(row)
    document["summary"] = summary


def format_table(document: dict[str, Any]) -> str:
    """The verdicts, one line per RTT: medians [min-max] over the runs (with what shoal
    itself got beside the TCP flow: it must not starve either)."""
    foreground = document["mode"] == "foreground"
    where = "lab" if document["where"] == "lab" else "simulator"
    reference = "TCP beside TCP" if foreground else "TCP alone"
    lines = [
        f"shoal bench share: {document['mode']}, {where}, {document['rate_mbit']:g} Mbit/s, "
        f"{document['buffer_packets']} packets of buffer"
        + (
            f" (queue at the {document['queue_at']}, TCP {document['tcp_congestion']})"
            if document["where"] == "lab"
            else ""
        ),
        f"{'RTT ms':>7} {'TCP beside shoal':>18} {reference:>18} {'ratio':>16} "
        f"{'shoal beside TCP':>18} {'shoal alone':>18} {'queue alone ms':>15}  target met",
    ]

    def cell(figure: dict[str, float], scale: float = 1.0, digits: int = 1) -> str:
        low, high = figure["min"] * scale, figure["max"] * scale
        return f"{figure['median'] * scale:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"

    for row in document["summary"]:
        ref_key = "tcp_beside_tcp_mbit" if foreground else "tcp_alone_mbit"
        lines.append(
            f"{row['rtt_ms']:>7g} {cell(row['tcp_beside_shoal_mbit']):>18} "
            f"{cell(row[ref_key]):>18} {cell(row['ratio'], digits=2):>16} "
            f"{cell(row['shoal_beside_tcp_mbit']):>18} {cell(row['shoal_alone_mbit']):>18} "
            f"{cell(row['shoal_alone_median_queue_ms'], digits=0):>15}  "
            f"{row['met_runs']}/{row['runs']}"
        )
    lines.append("target: " + document["summary"][0]["target"] if document["summary"] else "")
    return "\n".join(lines)


def write_charts(document: dict[str, Any], folder: Path) -> list[Path]:
    """One PNG per RTT (first run): each flow's rate over time, per scenario."""
    from shoal_dev.lab.charts import ChartsUnavailable

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChartsUnavailable(
            "charts need matplotlib: pip install -e ./dev (shoal-dev)"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    seen: set[float] = set()
    for run in document["runs"]:
        if run["rtt_ms"] in seen:
            continue
        seen.add(run["rtt_ms"])
        scenarios = run["scenarios"]
        figure, axes = plt.subplots(len(scenarios), 1, figsize=(8, 2.6 * len(scenarios)),
                                    dpi=100, sharex=True)  # fmt: skip
        for axis, (name, scenario) in zip(axes, scenarios.items(), strict=True):
            for flow in scenario["flows"]:
                axis.plot(flow["times"], flow["mbit"], label=flow["name"], linewidth=1.5)
            axis.axhline(document["rate_mbit"], color="grey", linestyle="--", linewidth=1)
            axis.set_ylabel("Mbit/s")
            axis.set_title(name, fontsize=9)
            axis.grid(alpha=0.3)
            axis.legend(loc="upper right", fontsize=8)
        axes[-1].set_xlabel("seconds")
        where = document["where"]
        label = f"{where}-{document['mode']}" + (
            f"-rtt{run['rtt_ms']:g}ms" if where == "sim" else ""
        )
        figure.suptitle(f"shoal bench share: {label}, {document['rate_mbit']:g} Mbit/s")
        figure.tight_layout()
        path = folder / f"share-{label}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


# ------------------------------------------------------------- the TCP flow's ends


def _tcp_receive(bind: str, result: Path) -> int:
    host, port = bind.rsplit(":", 1)
    listener = socket.create_server((host, int(port)))
    received = [0]
    lock = threading.Lock()
    samples: list[list[float]] = []
    stop = threading.Event()

    def serve(connection: socket.socket) -> None:
        with connection:
            buffer = bytearray(1 << 18)
            while not stop.is_set():
                count = connection.recv_into(buffer)
                if not count:
                    return
                with lock:
                    received[0] += count

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    def leave(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, leave)
    threading.Thread(target=accept, daemon=True).start()
    print("ready", flush=True)
    while not stop.is_set():
        with lock:
            samples.append([time.monotonic(), received[0]])
        stop.wait(0.1)
    with lock:
        samples.append([time.monotonic(), received[0]])
    result.write_text(json.dumps({"samples": samples}))
    return 0


def _tcp_send(peer: str, seconds: float, congestion: str) -> int:
    host, port = peer.rsplit(":", 1)
    block = os.urandom(_TCP_SEND_BLOCK)
    deadline = time.monotonic() + seconds
    sender = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connecting, so that the whole connection runs the algorithm asked for.
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
    sender.settimeout(10)
    sender.connect((host, int(port)))
    with sender as connection:
        connection.settimeout(1.0)
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.sendall(block)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The TCP flow's two processes (run inside the lab's namespaces)."""
    parser = argparse.ArgumentParser(prog="shoal_dev.bench.share")
    commands = parser.add_subparsers(dest="command", required=True)
    receive = commands.add_parser("tcp-receive")
    receive.add_argument("--bind", required=True)
    receive.add_argument("--result", type=Path, required=True)
    send = commands.add_parser("tcp-send")
    send.add_argument("--peer", required=True)
    send.add_argument("--seconds", type=float, required=True)
    send.add_argument("--congestion", default="cubic")
    arguments = parser.parse_args(argv)
    if arguments.command == "tcp-receive":
        return _tcp_receive(arguments.bind, arguments.result)
    with contextlib.suppress(OSError):
        return _tcp_send(arguments.peer, arguments.seconds, arguments.congestion)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["LabError", "ShareOptions", "format_table", "run_lab_share", "run_sim_share"]
