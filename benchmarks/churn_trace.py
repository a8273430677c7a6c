"""Where a churned sweep cell's time goes, against T_lbc (issue 9).

Runs one cell of a simulator grid (``shoal sim sweep``'s ``run_cell`` steps: the same
office, kill at 0.3 T_lb1, restart 3 s later on the stores as they were) and samples
every client every ``--step`` seconds of virtual time: chunks held, requests in
flight and to whom, the links' bytes. Prints a timeline (every 0.1 s) and what each
suspected loss cost:

* **requests at dead processes**: our requests to a killed process (asked before its
  restart), how long each stayed, and the chunk-seconds in which such a request was
  the only one for a chunk that a live process held (the picker asks nobody else);
* **the WAN**: chunks nobody in the office held at the kill, whose stripe holder died,
  what crossed the WAN during the outage, and WAN bytes over F;
* **the restart**: each restarted process from start to its first request and its
  first chunk, chunks on its disk against what it had verified when killed;
* **after the restart**: the chunk copies the office still needed, what its uplinks
  (and each restarted client's downlink) could move them in, against what it took,
  and the uplinks' use; downloaders that missed chunks and had nothing in flight.

Run: ``.venv/bin/python benchmarks/churn_trace.py --cell 12 --seed 1`` (cell numbers
as ``shoal sim sweep default`` prints them; a few seconds to a minute a cell).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from shoal.protocol.transfer.states import ReceiveState
from shoal_dev.sim.enterprise import SimClient, build_enterprise
from shoal_dev.sim.sweep import OFFICE, _restart, _victims, office_spec
from shoal_dev.sweep import CHURN_AT_BOUND, CHURN_DOWN_S, Cell, load_grid


@dataclass
class Request:
    """One chunk request of a live client, as the samples saw it."""

    client: str
    peer: str
    chunk: int
    first_seen: float
    last_seen: float
    started_receiving: bool = False


@dataclass
class Trace:
    cell: Cell
    seed: int
    step: float
    t0: float = math.nan
    kill_at: float = math.nan
    back_at: float = math.nan
    victims: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def held(enterprise, client: SimClient) -> set[int]:  # type: ignore[no-untyped-def]
    """Chunks verified in the client's store (its disk: a dead process's too)."""
    content_id = enterprise.content_id
    if content_id not in client.store:
        return set()
    return set(client.store.verified(content_id))


def run(cell: Cell, seed: int, step: float) -> Trace:
    trace = Trace(cell, seed, step)
    root_dir = tempfile.TemporaryDirectory(prefix="shoal-churn-trace-")
    root = Path(root_dir.name)
    enterprise = build_enterprise(
        root,
        [office_spec(cell)],
        package_size=cell.size_bytes,
        chunk_size=cell.chunk_bytes,
        seed=seed,
        link_profiles=True,
    )
    network = enterprise.network
    clients = enterprise.clients
    chunk_count = enterprise.manifest.chunk_count
    chunk_bits = enterprise.manifest.chunk_size * 8
    office = network.offices[OFFICE]
    one_copy = cell.one_copy_bound()
    up_bps = cell.client_up_mbit * 1e6
    down_bps = cell.client_down_mbit * 1e6

    # -- the run's steps, as ``run_cell`` takes them ---------------------------------
    while not any(enterprise.download_of(c) for c in clients):
        network.run(network.now + step)
    starts = [d.started_at for c in clients if (d := enterprise.download_of(c))]
    trace.t0 = t0 = min(starts)
    kill_time = t0 + CHURN_AT_BOUND * one_copy.seconds

    alive_process: dict[str, int] = {c.host.ip: 0 for c in clients}  # process generation
    restarted_at: dict[str, float] = {}
    requests: dict[tuple[str, int, int], Request] = {}  # (client, generation, rid)
    request_process: dict[tuple[str, int, int], int] = {}  # generation of the peer asked
    samples: list[dict] = []
    blocked: dict[str, float] = defaultdict(float)  # client -> chunk-seconds blocked
    blocked_after: dict[str, float] = defaultdict(float)
    idle_downloader: dict[str, float] = defaultdict(float)
    first_request: dict[str, float] = {}
    first_chunk: dict[str, float] = {}
    last_up = {c.host.ip: c.host.up.bytes_sent for c in clients}
    last_down = {c.host.ip: c.host.down.bytes_sent for c in clients}
    last_wan = office.wan_down.bytes_sent

    def sample() -> None:
        nonlocal last_wan
        now = network.now
        stores = {c.host.ip: held(enterprise, c) for c in clients}
        live_holders: dict[int, int] = defaultdict(int)
        for c in clients:
            if c.host.alive:
                for index in stores[c.host.ip]:
                    live_holders[index] += 1
        row = {"t": now - t0, "wan": office.wan_down.bytes_sent - last_wan, "clients": {}}
        last_wan = office.wan_down.bytes_sent
        dead_requests = 0
        for c in clients:
            ip = c.host.ip
            generation = alive_process[ip]
            up = c.host.up.bytes_sent - last_up[ip]
            down = c.host.down.bytes_sent - last_down[ip]
            last_up[ip], last_down[ip] = c.host.up.bytes_sent, c.host.down.bytes_sent
            info = {"alive": c.host.alive, "have": len(stores[ip]), "up": up, "down": down}
            row["clients"][ip] = info
            download = enterprise.download_of(c)
            if not c.host.alive or download is None:
                continue
            if ip in restarted_at and ip not in first_request and download.requests:
                first_request[ip] = now
            if (
                ip in restarted_at
                and ip not in first_chunk
                and (download.bytes_from_peers or download.bytes_from_server)
            ):
                first_chunk[ip] = now
            receiver = c.agent.engines[download.mode]._receiver
            in_flight_chunks: dict[int, list[tuple[str, bool]]] = defaultdict(list)
            for rid, (peer, chunk) in download.requests.items():
                key = (ip, generation, rid)
                record = requests.get(key)
                if record is None:
                    record = requests[key] = Request(ip, peer[0], chunk, now, now)
                    peer_host = next((x for x in clients if x.host.ip == peer[0]), None)
                    request_process[key] = (
                        -1  # the server
                        if peer_host is None
                        else alive_process[peer[0]]
                        if peer_host.host.alive
                        else -2
                    )
                record.last_seen = now
                transfer = receiver.downloads.get(rid)
                if transfer is not None and transfer.state is ReceiveState.RECEIVING:
                    record.started_receiving = True
                peer_gen = request_process[key]
                peer_host = next((x for x in clients if x.host.ip == peer[0]), None)
                dead = peer_host is not None and (
                    not peer_host.host.alive or peer_gen != alive_process[peer[0]]
                )
                in_flight_chunks[chunk].append((peer[0], dead))
                dead_requests += dead
            missing = set(range(chunk_count)) - stores[ip]
            if missing and not download.requests:
                idle_downloader[ip] += step
            for chunk, asked in in_flight_chunks.items():
                holders_alive = live_holders.get(chunk, 0) - (chunk in stores[ip])
                if all(dead for _, dead in asked) and holders_alive > 0:
                    blocked[ip] += step
                    if now >= trace.back_at:
                        blocked_after[ip] += step
        row["dead_requests"] = dead_requests
        row["copies"] = sum(len(s) for s in stores.values())
        row["union_live"] = len(set().union(*(stores[c.host.ip] for c in clients if c.host.alive)))
        row["union_all"] = len(set().union(*stores.values()))
        samples.append(row)

    def step_to(until: float, stop=None) -> None:  # type: ignore[no-untyped-def]
        while network.now < until - 1e-12:
            target = min(until, (math.floor((network.now - t0) / step + 1e-9) + 1) * step + t0)
            network.run(target)
            # Every event up to ``target`` ran: the clock may stand there (the next is later).
            network.now = max(network.now, target)
            sample()
            if stop is not None and stop():
                return

    step_to(kill_time)
    victims = _victims(enterprise, cell.churn_clients)
    trace.victims = [v.host.ip for v in victims]
    at_kill = {c.host.ip: held(enterprise, c) for c in clients}
    wan_at_kill = office.wan_down.bytes_sent
    partial: dict[str, int] = {}
    for v in victims:
        download = enterprise.download_of(v)
        receiver = v.agent.engines[download.mode]._receiver if download else None
        partial[v.host.ip] = (
            sum(t.received_count * t.segment_size for t in receiver.downloads.values())
            if receiver
            else 0
        )
        network.kill(v.host)
    trace.kill_at = network.now - t0
    server_core = enterprise.server.core
    rendezvous = server_core.wan_copy.rendezvous
    groups = list(rendezvous._groups.values())
    stripe_holders: list[str] = []
    if groups:
        id_to_ip = {rec.device_id.hex(): rec.ip for rec in server_core.clients.values()}
        stripe_holders = [
            id_to_ip.get(lease.holder, "?") if lease is not None else "-"
            for lease in groups[0].leases
        ]
    back = network.now + CHURN_DOWN_S
    network.at(back, lambda: None)
    step_to(back)
    trace.back_at = network.now - t0
    at_back = {c.host.ip: held(enterprise, c) for c in clients}
    wan_outage = office.wan_down.bytes_sent - wan_at_kill
    for v in victims:
        _restart(enterprise, v, root)
        alive_process[v.host.ip] += 1
        restarted_at[v.host.ip] = network.now
    step_to(t0 + 300, enterprise.all_complete)
    finished = [enterprise.download_of(c).completed_at for c in clients]
    t_last = max(finished) - t0
    bound = cell.churn_bound([(trace.kill_at, trace.back_at)] * len(victims))
    expected = hashlib.sha256(enterprise.package).hexdigest()
    from shoal_dev.sim.enterprise import file_sha256

    sha_ok = all(file_sha256(c.store, enterprise.content_id) == expected for c in clients)

    # -- the timeline ------------------------------------------------------------------
    live_ips = [c.host.ip for c in clients]
    short = {ip: ip.rsplit(".", 1)[1] for ip in live_ips}
    out = trace.rows
    out.append(
        f"cell {cell.name}, seed {seed}: chunks {chunk_count} x "
        f"{enterprise.manifest.chunk_size // 1024} KiB; T_lb1 {one_copy.seconds:.2f} s, "
        f"T_lbc {bound.seconds:.2f} s ({bound.binding}); T_last {t_last:.2f} s = "
        f"{t_last / one_copy.seconds:.2f} T_lb1 = {t_last / bound.seconds:.2f} T_lbc; "
        f"sha {'ok' if sha_ok else 'WRONG'}"
    )
    out.append(
        f"kill at {trace.kill_at:.3f} s ({', '.join(short[v] for v in trace.victims)}), "
        f"back at {trace.back_at:.3f} s; clients (last octet): "
        + " ".join(short[ip] + ("*" if ip in trace.victims else "") for ip in live_ips)
    )
    out.append("   t     WAN   uplinks  use  copies  union(live/all)  dead-req  held per client")
    every = max(1, round(0.1 / step))
    for index in range(0, len(samples), every):
        chunk_rows = samples[index : index + every]
        last = chunk_rows[-1]
        seconds = step * len(chunk_rows)
        wan = sum(r["wan"] for r in chunk_rows) * 8 / seconds / 1e6
        ups = sum(sum(ci["up"] for ci in r["clients"].values()) for r in chunk_rows)
        live = sum(1 for ci in last["clients"].values() if ci["alive"])
        use = ups * 8 / seconds / (up_bps * max(live, 1))
        out.append(
            f"{last['t']:5.2f} {wan:6.1f} {ups * 8 / seconds / 1e6:7.1f} {use:5.0%} "
            f"{last['copies']:5d}   {last['union_live']:3d}/{last['union_all']:3d}"
            f"          {last['dead_requests']:3d}     "
            + " ".join(
                f"{ci['have']:2d}" if ci["alive"] else " ." for ci in last["clients"].values()
            )
        )

    # -- the losses ----------------------------------------------------------------------
    notes = trace.notes
    live_at_kill = set().union(*(at_kill[ip] for ip in live_ips if ip not in trace.victims))
    all_at_kill = set().union(*at_kill.values())
    unfetched = set(range(chunk_count)) - all_at_kill
    stripes = len(stripe_holders) or 1
    dead_stripe_unfetched = [
        c for c in unfetched if stripe_holders and stripe_holders[c % stripes] in trace.victims
    ]
    notes.append(
        f"AT THE KILL ({trace.kill_at:.2f} s): the office holds {len(all_at_kill)} of "
        f"{chunk_count} chunks, the live clients {len(live_at_kill)}; only on dead disks: "
        f"{len(all_at_kill - live_at_kill)}; not fetched yet: {len(unfetched)}, of them "
        f"{len(dead_stripe_unfetched)} in a dead holder's stripe (stripes {stripes}: "
        + " ".join(short.get(h, h) for h in stripe_holders)
        + "); partial chunk bytes lost with the victims: "
        + ", ".join(f"{short[ip]} {partial[ip] // 1024} KiB" for ip in trace.victims)
    )
    live_at_back = set().union(*(at_back[ip] for ip in live_ips if ip not in trace.victims))
    notes.append(
        f"DURING THE OUTAGE: WAN {wan_outage / 1e6:.2f} MB in "
        f"({wan_outage * 8 / (trace.back_at - trace.kill_at) / 1e6:.1f} Mbit/s of "
        f"{cell.wan_mbit:g}); the live clients' union {len(live_at_kill)} -> "
        f"{len(live_at_back)} chunks; each live client "
        + ", ".join(
            f"{short[ip]} {len(at_kill[ip])}->{len(at_back[ip])}"
            for ip in live_ips
            if ip not in trace.victims
        )
    )
    copies_needed = sum(chunk_count - len(s) for s in at_back.values())
    need_bits = copies_needed * chunk_bits
    uplinks_bound = need_bits / (up_bps * cell.clients)  # every uplink, WAN not counted
    per_client = max((chunk_count - len(at_back[ip])) * chunk_bits / down_bps for ip in live_ips)
    after = t_last - trace.back_at
    notes.append(
        f"AT THE RESTART ({trace.back_at:.2f} s): {copies_needed} chunk copies still needed "
        f"({need_bits / 1e6:.0f} Mbit): all uplinks at full rate {uplinks_bound:.2f} s, the "
        f"neediest downlink {per_client:.2f} s; it took {after:.2f} s "
        f"(T_lbc allows {bound.seconds - trace.back_at:.2f} s after it, 1.3 T_lbc "
        f"{1.3 * bound.seconds - trace.back_at:.2f} s)"
    )
    restart_rows = []
    for ip in trace.victims:
        begun = restarted_at[ip] - t0
        request = first_request.get(ip, math.nan) - t0
        chunk = first_chunk.get(ip, math.nan) - t0
        restart_rows.append(
            f"{short[ip]}: first request +{request - begun:.2f} s, first chunk "
            f"+{chunk - begun:.2f} s, disk {len(at_back[ip])} of {len(at_kill[ip])} held "
            f"at the kill, done +{finished[live_ips.index(ip)] - t0 - begun:.2f} s"
        )
    notes.append("THE RESTARTED PROCESSES: " + "; ".join(restart_rows))
    dead = [
        (key, r)
        for key, r in requests.items()
        if request_process[key] not in (-1,)
        and (
            request_process[key] == -2
            or (r.peer in restarted_at and r.first_seen < restarted_at[r.peer])
        )
        and r.peer in trace.victims
        and r.last_seen >= trace.kill_at + t0
    ]
    if dead:
        after_kill = [r.last_seen - max(r.first_seen, trace.kill_at + t0) for _, r in dead]
        after_back = [max(0.0, r.last_seen - (trace.back_at + t0)) for _, r in dead]
        notes.append(
            f"REQUESTS AT DEAD PROCESSES: {len(dead)} (asked before the restart, alive at "
            f"the kill or later; {sum(r.started_receiving for _, r in dead)} had begun "
            f"receiving): each stayed {statistics.median(after_kill):.2f} s after the kill "
            f"(median; max {max(after_kill):.2f}), {sum(after_back):.2f} request-s after "
            f"the restart (max {max(after_back):.2f} s); chunk-seconds blocked (the only "
            f"requests for a chunk a live process held): {sum(blocked.values()):.2f} in "
            f"all, {sum(blocked_after.values()):.2f} after the restart ("
            + ", ".join(
                f"{short[ip]} {blocked_after[ip]:.2f}" for ip in live_ips if blocked_after[ip]
            )
            + ")"
        )
    else:
        notes.append("REQUESTS AT DEAD PROCESSES: none")
    back_index = next(i for i, r in enumerate(samples) if r["t"] >= trace.back_at - 1e-9)
    tail = samples[back_index:]
    ups = sum(sum(ci["up"] for ci in r["clients"].values()) for r in tail)
    seconds = step * len(tail)
    notes.append(
        f"AFTER THE RESTART: uplinks {ups * 8 / seconds / 1e6:.1f} Mbit/s of "
        f"{up_bps * cell.clients / 1e6:.0f} ({ups * 8 / seconds / (up_bps * cell.clients):.0%}); "
        f"downloader-seconds with chunks missing and nothing in flight: "
        + ", ".join(f"{short[ip]} {s:.2f}" for ip, s in idle_downloader.items() if s)
    )
    size = enterprise.manifest.size
    notes.append(f"RE-FETCHING: WAN {office.wan_down.bytes_sent / size:.3f} F")
    root_dir.cleanup()
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="default")
    parser.add_argument("--cell", type=int, default=12, help="the cell's number in the grid")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--step", type=float, default=0.01, help="virtual seconds per sample")
    parser.add_argument("--quiet", action="store_true", help="no timeline, the losses only")
    args = parser.parse_args()
    grid = load_grid(args.grid, "shoal_dev.sim")
    cell = grid.cells[args.cell - 1]
    trace = run(cell, args.seed, args.step)
    lines = trace.rows[:2] if args.quiet else trace.rows
    print("\n".join(lines + trace.notes))


if __name__ == "__main__":
    main()
