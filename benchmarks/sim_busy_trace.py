"""Why chunk requests are refused BUSY (issues 9 and 10): every refusal by its cause.

    .venv/bin/python benchmarks/sim_busy_trace.py cell default 9 [--seed 1]
    .venv/bin/python benchmarks/sim_busy_trace.py estate estate-10k --devices 200
        --offices 10 --horizon 8 [--seed 1]

Runs one sweep cell (``run_cell``) or an estate in flow mode (``run_scenario``) with the
holders' upload slots (``UploadSlots.offer``) and the downloaders' outcomes traced, and
prints one JSON line: requests offered to a holder's slots, and the BUSY refusals by the
holder's reason (``turn cap``: the downloader already had ``max_turns_per_peer`` uploads
there; ``second turn``: it had one, and the slots were contended; ``queue full``: it had
none, and the slots and queue were full; ``penalty``), by what the downloader still had
in flight there, and by how many times in a row that holder had refused it since its
last chunk from it. Nothing here changes a decision.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from shoal.client.downloads import DownloadsMachine
from shoal.protocol.serving import Admission, UploadSlots
from shoal.protocol.transfer import ChunkRefused, RefusalReason
from shoal_dev.sim import network as sim_network


class Trace:
    def __init__(self) -> None:
        self.offers: Counter[str] = Counter()
        self.refused_in_flight: Counter[int] = Counter()
        self.refused_in_a_row: Counter[int] = Counter()
        self.refused_measured: Counter[str] = Counter()
        self.networks: list[Any] = []
        self.refused_by_holder: Counter[int] = Counter()
        self.refused_holders_of_chunk: Counter[str] = Counter()

    def install(self) -> None:
        trace = self
        offer = UploadSlots.offer

        def traced_offer(
            slots: UploadSlots[Any, Any],
            key: Any,
            item: Any,
            now: float,
            length: int = 0,
            peer: Any = None,
        ) -> Admission:
            turns = slots._turns.get(peer, 0) if peer is not None else 0
            waiting = len(slots._waiting)
            limit = slots.queue_limit
            admission = offer(slots, key, item, now, length, peer)
            if admission is Admission.REFUSE:
                if turns >= slots.max_turns_per_peer:
                    why = "refused: turn cap"
                elif peer is not None and slots.penalised(peer, now):
                    why = "refused: penalty"
                elif turns:
                    running = any(slots._peer_of.get(k) == peer for k in slots._active)
                    why = "refused: second turn while contended, first " + (
                        "running" if running else "waiting"
                    )
                else:
                    why = f"refused: queue full ({'full' if waiting >= limit else '?'})"
                trace.refused_by_holder[id(slots)] += 1
            else:
                why = admission.value
            trace.offers[why] += 1
            return admission

        UploadSlots.offer = traced_offer  # type: ignore[method-assign]

        outcome = DownloadsMachine.on_outcome

        def traced_outcome(self: DownloadsMachine, mode: Any, event: Any, now: float) -> None:
            download = self.downloads.get(event.content_id)
            asked = download.requests.get(event.request_id) if download else None
            busy = isinstance(event, ChunkRefused) and event.reason is RefusalReason.BUSY
            if asked is not None and busy and download.picker is not None:
                peer = asked[0]
                # What we still have asked there besides the refused request.
                trace.refused_in_flight[download.picker.in_flight(peer) - 1] += 1
                trace.refused_in_a_row[download.picker.busy_peers.in_a_row(peer)] += 1
                rate = download.picker.rate(peer)
                measured = "unmeasured" if rate is None else f"cap {1 + int(rate * 0.5)}"
                trace.refused_measured[measured] += 1
                picker, chunk_bit = download.picker, download.picker._bit(asked[1])
                others = sum(
                    1
                    for other, mask in picker._availability_mask.items()
                    if other != peer and other not in picker._origins and mask & chunk_bit
                )
                trace.refused_holders_of_chunk[
                    "0" if not others else "1" if others == 1 else "2+"
                ] += 1
            outcome(self, mode, event, now)

        DownloadsMachine.on_outcome = traced_outcome  # type: ignore[method-assign]

        run = sim_network.SimNetwork.run

        def traced_run(network: Any, *rest: Any, **named: Any) -> float:
            trace.networks.append(network)
            return run(network, *rest, **named)

        sim_network.SimNetwork.run = traced_run  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["cell", "estate"])
    parser.add_argument("name", help="grid (cell) or scenario (estate)")
    parser.add_argument("cell", type=int, nargs="?", help="the cell's number (1-based)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--devices", type=int)
    parser.add_argument("--offices", type=int)
    parser.add_argument("--horizon", type=float, default=0.0)
    args = parser.parse_args()
    trace = Trace()
    trace.install()
    figures: dict[str, Any] = {"kind": args.kind, "name": args.name, "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="shoal-busy-") as root:
        if args.kind == "cell":
            from shoal_dev.sim.sweep import run_cell
            from shoal_dev.sweep import load_grid

            grid = load_grid(args.name, "shoal_dev.sim")
            cell = grid.cells[args.cell - 1]
            row = run_cell(cell, Path(root), timeout_s=grid.timeout_s, wall_s=1200, seed=args.seed)
            figures.update(
                cell=args.cell,
                t_last_s=row["t_last_s"],
                t_over_one_copy_bound=row["t_over_one_copy_bound"],
                wan_over_package=row["wan_over_package"],
            )
        else:
            from shoal_dev.sim.estate import load_scenario, run_scenario

            scenario = load_scenario(args.name)
            if args.horizon > 0:
                scenario = replace(scenario, timeout_s=args.horizon)
            sizes = {"devices": args.devices, "offices": args.offices}
            chosen = {key: value for key, value in sizes.items() if value}
            if chosen and scenario.estate is not None:
                scenario = replace(scenario, estate=replace(scenario.estate, **chosen))
            document = run_scenario(scenario, seed=args.seed, root=Path(root), say=lambda _: None)
            moved = sum(document["bytes_by_source"].values())
            figures["chunks_received"] = round(moved / document["chunk_bytes"])
    figures["pumps"] = trace.networks[0].pumps if trace.networks else None
    figures["busy_refused_by_holders"] = sum(
        count for why, count in trace.offers.items() if why.startswith("refused")
    )
    figures["busy_received"] = sum(trace.refused_in_flight.values())
    figures["offers"] = dict(trace.offers.most_common())
    figures["busy_by_in_flight_there"] = dict(sorted(trace.refused_in_flight.items()))
    figures["busy_by_refusals_in_a_row"] = dict(sorted(trace.refused_in_a_row.items()))
    by_holder = [count for _, count in trace.refused_by_holder.most_common()]
    figures["busy_holders"] = len(by_holder)
    figures["busy_at_top_holders"] = [sum(by_holder[:1]), sum(by_holder[:10])]
    figures["busy_by_other_holders_of_the_chunk"] = dict(trace.refused_holders_of_chunk)
    figures["busy_by_rate_there"] = dict(trace.refused_measured.most_common())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
