"""Where one simulator sweep cell's time goes against T_lb1 (virtual time, deterministic).

Runs one cell of a grid (``shoal sim sweep``'s ``run_cell``, the real agents, server and
transfer engine) with its links and its clients' requests traced, and prints the phases
of the run (first request, first chunk in the office, the WAN copy's end, T_last), how
busy the WAN and the uplinks were in each tenth of the run, the tail (what the last
chunks waited for), and the BUSY refusals::

    .venv/bin/python benchmarks/sim_cell_trace.py default 3 [--seed 1] [--windows 10]

Nothing here changes a decision: the traces wrap methods and record their calls.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from shoal.client.downloads import DownloadsMachine
from shoal.client.serving import ServingMachine
from shoal.protocol.transfer import ChunkReceived, ChunkRefused, RefusalReason
from shoal_dev.sim import network as sim_network
from shoal_dev.sim import sweep as sim_sweep
from shoal_dev.sim.enterprise import SERVER_IP
from shoal_dev.sim.sweep import run_cell
from shoal_dev.sweep import load_grid


class Trace:
    def __init__(self) -> None:
        self.links: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        self.queued: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        self.requests: list[tuple[float, str, str, int]] = []  # now, me, peer, chunk
        self.arrivals: list[tuple[float, str, str, int]] = []  # now, me, peer, chunk
        self.refusals: list[tuple[float, str, str, int, str]] = []
        self.uploads: list[tuple[float, str, str, int]] = []  # now, uploader, peer, chunk
        self.starts: dict[str, float] = {}
        self.enterprise: Any = None
        self.upload_ends: list[tuple[float, str, int]] = []
        self.slots: list[tuple[float, str, int, int, int]] = []

    def install(self) -> None:
        trace = self
        transmit = sim_network.Link.transmit

        def traced_transmit(link: Any, size: int, departure: float, rng: Any) -> float | None:
            free_before = link.free_at
            arrival = transmit(link, size, departure, rng)
            if arrival is not None:
                start = max(departure, free_before)
                trace.links[link.name].append((start, link.free_at, size))
                trace.queued[link.name].append((departure, start - departure, size))
            return arrival

        sim_network.Link.transmit = traced_transmit  # type: ignore[method-assign]

        build = sim_sweep.build_enterprise

        def kept_build(*args: Any, **kwargs: Any) -> Any:
            trace.enterprise = build(*args, **kwargs)
            return trace.enterprise

        sim_sweep.build_enterprise = kept_build  # type: ignore[assignment]

        schedule = DownloadsMachine._schedule_requests

        def traced_schedule(self: DownloadsMachine, download: Any, now: float) -> None:
            before = set(download.requests)
            schedule(self, download, now)
            for request_id, (peer, chunk) in download.requests.items():
                if request_id not in before:
                    trace.requests.append((now, self.config.ip, peer[0], chunk))

        DownloadsMachine._schedule_requests = traced_schedule  # type: ignore[method-assign]

        outcome = DownloadsMachine.on_outcome

        def traced_outcome(self: DownloadsMachine, mode: Any, event: Any, now: float) -> None:
            download = self.downloads.get(event.content_id)
            asked = download.requests.get(event.request_id) if download else None
            if asked is not None:
                peer, chunk = asked
                if isinstance(event, ChunkReceived):
                    trace.arrivals.append((now, self.config.ip, peer[0], chunk))
                else:
                    why = event.reason.name if isinstance(event, ChunkRefused) else "timeout"
                    trace.refusals.append((now, self.config.ip, peer[0], chunk, why))
            outcome(self, mode, event, now)

        DownloadsMachine.on_outcome = traced_outcome  # type: ignore[method-assign]

        start = DownloadsMachine._start

        def traced_start(self: DownloadsMachine, download: Any, now: float) -> None:
            # The sweep's clock starts at the download's start (``started_at``, when the
            # assignment came), before the manifest's and the lease's round trip.
            trace.starts.setdefault(self.config.ip, download.started_at)
            start(self, download, now)

        DownloadsMachine._start = traced_start  # type: ignore[method-assign]

        serve = ServingMachine._start

        def traced_serve(self: ServingMachine, mode: Any, event: Any, now: float) -> None:
            trace.uploads.append((now, self.config.ip, event.peer[0], event.chunk_index))
            serve(self, mode, event, now)

        ServingMachine._start = traced_serve  # type: ignore[method-assign]

        ended = ServingMachine._upload_ended

        def traced_ended(
            self: ServingMachine, mode: Any, peer: Any, request_id: int, now: float, **kw: Any
        ) -> None:
            trace.upload_ends.append((now, self.config.ip, self.uploads.active))
            ended(self, mode, peer, request_id, now, **kw)
            trace.slots.append(
                (now, self.config.ip, self.uploads.slots, self.uploads.active, self.uploads.waiting)
            )

        ServingMachine._upload_ended = traced_ended  # type: ignore[method-assign]


def busy_in(intervals: list[tuple[float, float, int]], start: float, end: float) -> float:
    """Seconds of [start, end) the link spent sending."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b, _ in intervals)


def decompose(
    trace: Trace,
    clients: list[str],
    ups: dict[str, list[tuple[float, float, int]]],
    wan: list[tuple[float, float, int]],
    t0: float,
    t_last: float,
    first_ask: float,
    first_in: float,
    wan_end: float,
    bound: float,
    cell: Any,
) -> None:
    """T - T_lb1 in parts, in seconds and x T_lb1.

    Uplinks: N x T = the uplinks' busy time + their idle time, and N x T_lb1 is the
    busy time of (N-1)F of chunk payload alone, so T - T_lb1 = (bytes beyond (N-1)F:
    duplicates and retransmissions, then headers, ACKs and control) / sum_u + idle
    uplink time / N, the idle split at the first chunk's arrival in the office and at
    the WAN copy's end. WAN: T - F/C = the WAN's idle time and bytes beyond F up to the
    WAN copy's end, then the tail after it.
    """
    n, size = cell.clients, cell.size_bytes
    up_rate, wan_rate = cell.client_up_mbit * 1e6, cell.wan_mbit * 1e6
    first_byte = min((b for a, b, s in wan if a >= first_ask and s >= 300), default=first_in)
    payload = sum(
        engine.counters.payload_bytes_sent
        for client in trace.enterprise.clients
        for engine in client.agent.engines.values()
    )
    up_bytes = sum(s for ivs in ups.values() for a, _, s in ivs if t0 <= a < t_last)
    spans = (("start", t0, first_in), ("copy", first_in, wan_end), ("tail", wan_end, t_last))
    parts = {
        "payload beyond (N-1)F": (payload - (n - 1) * size) * 8 / (up_rate * n),
        "headers/ACKs/control": (up_bytes - payload) * 8 / (up_rate * n),
    }
    for name, a, b in spans:
        busy = sum(busy_in(ivs, a, b) for ivs in ups.values())
        parts[f"uplinks idle, {name}"] = (len(ups) * (b - a) - busy) / n
    total = t_last - t0 - (n - 1) * size * 8 / (n * up_rate)
    print(
        f"decomposition, uplinks (T - (N-1)F/sum_u = {total:.3f} s = {total / bound:.3f} T_lb1;"
        f" first request to the server {first_ask - t0:.3f} s, its first byte leaves the WAN"
        f" link {first_byte - t0:.3f} s, first chunk "
        f"{first_in - t0:.3f} s, WAN copy ends {wan_end - t0:.3f} s): "
        + "; ".join(f"{k} {v:.3f} s = {v / bound:.3f}" for k, v in parts.items())
        + f"; residue {total - sum(parts.values()):+.3f} s"
    )
    wan_bytes = sum(s for a, _, s in wan if t0 <= a < wan_end)
    wan_busy = busy_in(wan, t0, wan_end)
    wparts = {
        "WAN idle to the copy's end": (wan_end - t0) - wan_busy,
        "WAN bytes beyond F": (wan_bytes - size) * 8 / wan_rate,
        "tail after the copy": t_last - wan_end,
    }
    wtotal = t_last - t0 - size * 8 / wan_rate
    print(
        f"decomposition, WAN (T - F/C = {wtotal:.3f} s = {wtotal / bound:.3f} T_lb1): "
        + "; ".join(f"{k} {v:.3f} s = {v / bound:.3f}" for k, v in wparts.items())
        + f"; residue {wtotal - sum(wparts.values()):+.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid")
    parser.add_argument("cell", type=int, help="the cell's number in the sweep (1-based)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument(
        "--chunk",
        type=int,
        action="append",
        default=[],
        help="print every request, refusal, upload and arrival of this chunk",
    )
    args = parser.parse_args()
    grid = load_grid(args.grid, "shoal_dev.sim")
    cell = grid.cells[args.cell - 1]
    trace = Trace()
    trace.install()
    with tempfile.TemporaryDirectory(prefix="shoal-trace-") as root:
        row = run_cell(cell, Path(root), timeout_s=grid.timeout_s, wall_s=1200, seed=args.seed)
    bound = row["one_copy_bound_s"]
    print(f"cell {args.cell} {cell.name} seed {args.seed}: {row['status']} {row['reason']}")
    print(
        f"T_last {row['t_last_s']} s, T_lb1 {bound} s ({row['binding']}), "
        f"T/T_lb1 {row['t_over_one_copy_bound']}, WAN/F {row['wan_over_package']}, "
        f"chunk {row['chunk_bytes']} B, wall {row['wall_s']} s"
    )
    wan_rate, up_rate = cell.wan_mbit * 1e6, cell.client_up_mbit * 1e6
    n, size = cell.clients, cell.size_bytes
    terms = {
        "wan F/C": size * 8 / wan_rate,
        "downlink F/d": size * 8 / (cell.client_down_mbit * 1e6),
        "uplinks (N-1)F/sum_u": (n - 1) * size * 8 / (n * up_rate),
    }
    print("T_lb1 terms: " + ", ".join(f"{k} {v:.3f} s" for k, v in terms.items()))
    t0 = min(trace.starts.values())
    t_last = t0 + row["t_last_s"]
    rel = lambda t: t - t0  # noqa: E731
    clients = sorted({ip for _, ip, _, _ in trace.requests})
    from_server = [a for a in trace.arrivals if a[2] == SERVER_IP]
    first_req = min(r[0] for r in trace.requests)
    first_server_req = min(r[0] for r in trace.requests if r[2] == SERVER_IP)
    first_in = min(a[0] for a in from_server)
    wan_end = max(a[0] for a in from_server)
    wan = trace.links["Branch/wan-down"]
    wan_first = min(a for a, _, _ in wan if a >= t0)
    print(
        f"phases (s from t0): manifest+start: first request {rel(first_req):.3f} "
        f"(to the server {rel(first_server_req):.3f}); first chunk in the office "
        f"{rel(first_in):.3f}; WAN copy ends {rel(wan_end):.3f} "
        f"({len(from_server)} chunks from the server); T_last {rel(t_last):.3f}; "
        f"tail after the WAN copy {t_last - wan_end:.3f} s = {(t_last - wan_end) / bound:.2f} T_lb1"
    )
    wan_busy = busy_in(wan, t0, wan_end)
    # T_last from the download's start (the sweep's t0, before the manifest) as a sum:
    # start-up to the first WAN byte, the WAN's bytes at its rate, the WAN copy's
    # shortfall (idle WAN before its last chunk), the relay's tail after it, the finish.
    begun = min(
        d.started_at for c in trace.enterprise.clients if (d := trace.enterprise.download_of(c))
    )
    wan_bytes_s = sum(s for a, _, s in wan if a >= t0) * 8 / wan_rate
    last_in = max(a[0] for a in trace.arrivals)
    parts = {
        "start-up to the first WAN byte": wan_first - begun,
        "WAN bytes at the WAN rate": wan_bytes_s,
        "WAN copy shortfall": wan_end - wan_first - wan_bytes_s,
        "relay tail after the WAN copy": last_in - wan_end,
        "finish after the last chunk": begun + row["t_last_s"] - last_in,
    }
    print(
        "T_last = "
        + " + ".join(f"{k} {v:.3f} s ({v / bound:.2f} T_lb1)" for k, v in parts.items())
        + f"; F/C {size * 8 / wan_rate:.3f} s"
    )
    print(
        f"WAN down busy {wan_busy:.3f} s of the {wan_end - t0:.3f} s to the WAN copy's end "
        f"({wan_busy / (wan_end - t0):.0%}); of it before the first chunk request "
        f"{busy_in(wan, t0, first_req):.3f} s; WAN bytes {sum(s for *_, s in wan)} "
        f"(first byte at {rel(wan_first):.3f})"
    )
    ups = {ip: trace.links[f"{ip}/up"] for ip in clients}
    up_bytes = sum(sum(s for a, _, s in ivs if a >= t0) for ivs in ups.values())
    up_busy = sum(busy_in(ivs, t0, t_last) for ivs in ups.values())
    print(
        f"uplinks: busy {up_busy / (len(clients) * (t_last - t0)):.0%} of N x T_last; "
        f"bytes {up_bytes} = {up_bytes / ((n - 1) * size):.3f} x (N-1)F"
    )
    decompose(
        trace, clients, ups, wan, t0, t_last, first_server_req, first_in, wan_end, bound, cell
    )
    small = [
        q
        for ip in clients
        for t, q, sz in trace.queued[f"{ip}/up"]
        if sz < 300 and t0 <= t <= t_last
    ]
    big = [
        q
        for ip in clients
        for t, q, sz in trace.queued[f"{ip}/up"]
        if sz >= 300 and t0 <= t <= t_last
    ]
    down = [q for ip in clients for t, q, sz in trace.queued[f"{ip}/down"] if t0 <= t <= t_last]
    wanq = [q for t, q, sz in trace.queued["Branch/wan-down"] if t0 <= t <= t_last]
    for name, qs in (
        ("uplink control datagrams", small),
        ("uplink data datagrams", big),
        ("downlinks", down),
        ("WAN down", wanq),
    ):
        if qs:
            qs = sorted(qs)
            print(
                f"queueing delay, {name}: median {qs[len(qs) // 2] * 1000:.1f} ms, "
                f"p90 {qs[int(len(qs) * 0.9)] * 1000:.1f} ms, "
                f"max {qs[-1] * 1000:.1f} ms ({len(qs)})"
            )
    totals: dict[str, int] = defaultdict(int)
    for client in trace.enterprise.clients:
        for engine in client.agent.engines.values():
            for field in (
                "data_packets_sent",
                "data_packets_retransmitted",
                "payload_bytes_sent",
                "acks_sent",
                "datagrams_sent",
                "retransmission_timeouts",
                "congestion_events",
                "chunks_delivered",
            ):
                totals[field] += getattr(engine.counters, field)
    print(
        "clients' engines: "
        + ", ".join(f"{k} {v}" for k, v in totals.items())
        + f"; payload / (N-1)F {totals['payload_bytes_sent'] / ((n - 1) * size):.3f}"
        + "; discovery pushes_sent "
        + str(sum(c.agent.discovery.counters.pushes_sent for c in trace.enterprise.clients))
    )
    # Per window: WAN busy, uplinks busy, chunks held in the office.
    windows = args.windows
    span = t_last - t0
    print(f"{'window s':>13} {'WAN':>5} {'uplinks':>7} {'held/needed':>11} {'from srv':>8}")
    holds: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for when, ip, _, chunk in trace.arrivals:
        holds[ip].append((when, chunk))
    total_needed = n * (size // row["chunk_bytes"] + (1 if size % row["chunk_bytes"] else 0))
    for w in range(windows):
        a, b = t0 + span * w / windows, t0 + span * (w + 1) / windows
        wan_share = busy_in(wan, a, b) / (b - a)
        up_share = sum(busy_in(ivs, a, b) for ivs in ups.values()) / (len(ups) * (b - a))
        held = sum(1 for ip in holds for when, _ in holds[ip] if when < b)
        srv = sum(1 for x in from_server if a <= x[0] < b)
        print(
            f"{rel(a):6.3f}-{rel(b):6.3f} {wan_share:5.0%} {up_share:7.0%} "
            f"{held:5d}/{total_needed:<5d} {srv:8d}"
        )
    # Per chunk: when it entered the office, when the last client got it.
    entered: dict[int, float] = {}
    last_got: dict[int, float] = {}
    for when, _ip, peer, chunk in trace.arrivals:
        if peer == SERVER_IP:
            entered[chunk] = min(entered.get(chunk, when), when)
        last_got[chunk] = max(last_got.get(chunk, when), when)
    spread = sorted((last_got[c] - entered[c], c) for c in entered)
    spreads = [s for s, _ in spread]
    print(
        f"per chunk, office entry -> every client: median {statistics.median(spreads):.3f} s, "
        f"max {spreads[-1]:.3f} (chunk {spread[-1][1]}); chunk time on one uplink "
        f"{row['chunk_bytes'] * 8 / up_rate:.4f} s"
    )
    for when, ip, peer, chunk in sorted(trace.arrivals)[-8:]:
        print(
            f"  late arrival {rel(when):.3f} at {ip} chunk {chunk} from {peer} "
            f"(in office {rel(entered.get(chunk, when)):.3f})"
        )
    busy = [r for r in trace.refusals if r[4] == RefusalReason.BUSY.name]
    print(
        f"refusals: {len(trace.refusals)} ({len(busy)} BUSY); requests {len(trace.requests)}, "
        f"arrivals {len(trace.arrivals)}, duplicates "
        f"{len(trace.arrivals) - len({(ip, c) for _, ip, _, c in trace.arrivals})}"
    )
    # Peer-to-peer chunks: request -> upload start (queue) -> arrival (transfer).
    started_at = {}
    for when, uploader, peer, chunk in trace.uploads:
        started_at.setdefault((peer, uploader, chunk), when)
    asked_at = {}
    for when, me, peer, chunk in trace.requests:
        asked_at[(me, peer, chunk)] = when
    queue, transfer = [], []
    for when, me, peer, chunk in trace.arrivals:
        if peer == SERVER_IP:
            continue
        s0, a0 = started_at.get((me, peer, chunk)), asked_at.get((me, peer, chunk))
        if s0 is not None and a0 is not None:
            queue.append(s0 - a0)
            transfer.append(when - s0)
    if queue:
        qs, ts = sorted(queue), sorted(transfer)
        print(
            f"peer chunks: {len(queue)}; wait in the uploader's line "
            f"median {qs[len(qs) // 2]:.4f} s "
            f"(p90 {qs[int(len(qs) * 0.9)]:.4f}); start->arrival median {ts[len(ts) // 2]:.4f} s "
            f"(p90 {ts[int(len(ts) * 0.9)]:.4f}); one chunk alone on an uplink "
            f"{row['chunk_bytes'] * 8 / up_rate:.4f} s"
        )
    if trace.slots:
        sl = [x[2] for x in trace.slots]
        act = [x[3] for x in trace.slots]
        wt = [x[4] for x in trace.slots]
        print(
            f"upload slots at upload ends: slots median {statistics.median(sl)} max {max(sl)}; "
            f"running after median {statistics.median(act)}; "
            f"waiting median {statistics.median(wt)} max {max(wt)}"
        )
    by_holder: dict[str, list[str]] = defaultdict(list)
    asked_srv = {(me, c): t for t, me, peer, c in trace.requests if peer == SERVER_IP}
    for when, ip, _, chunk in sorted(from_server):
        by_holder[ip].append(
            f"{chunk}@{rel(asked_srv.get((ip, chunk), when)):.3f}->{rel(when):.3f}"
        )
    for ip, got in sorted(by_holder.items()):
        print(f"  from the server to {ip}: " + " ".join(got))
    for chunk in args.chunk:
        print(f"chunk {chunk}:")
        rows = [(t, "ask", me, peer) for t, me, peer, c in trace.requests if c == chunk]
        rows += [
            (t, "refused " + why, me, peer) for t, me, peer, c, why in trace.refusals if c == chunk
        ]
        rows += [(t, "upload starts", peer, up) for t, up, peer, c in trace.uploads if c == chunk]
        rows += [(t, "arrives", me, peer) for t, me, peer, c in trace.arrivals if c == chunk]
        for t, what, me, peer in sorted(rows):
            print(f"  {rel(t):.4f} {me} {what} {peer}")
    # The last chunk of each client: asked when, of whom, how long after it was held nearby.
    for ip in clients:
        mine = sorted(x for x in trace.arrivals if x[1] == ip)
        when, _, peer, chunk = mine[-1]
        asks = [r for r in trace.requests if r[1] == ip and r[3] == chunk]
        refused = [r for r in trace.refusals if r[1] == ip and r[3] == chunk]
        print(
            f"  {ip} done {rel(when):.3f}: last chunk {chunk} from {peer}, entered office "
            f"{rel(entered.get(chunk, when)):.3f}, asked "
            + ", ".join(f"{rel(t):.3f}->{p}" for t, _, p, _ in asks)
            + (
                f"; refused {', '.join(f'{rel(t):.3f} {p} {w}' for t, _, p, _, w in refused)}"
                if refused
                else ""
            )
        )


if __name__ == "__main__":
    main()
