"""Calibrate the flow-level simulator against the packet-level one (issue 10).

Runs the lab's scenarios (branch-flash, multi-office, churn, slow-uplinks; their short
``[ci]`` versions unless ``--full``) through ``shoal_dev.sim.estate`` in packet mode and
in flow mode, same seed, and prints per office the completion time of the last device
and the WAN bytes, with the flow/packet ratios. Targets: completion within 15%, WAN
bytes within 2%.

    .venv/bin/python benchmarks/sim_calibration.py [--full] [--seed N]
"""

from __future__ import annotations

import argparse
import tempfile
from importlib import resources
from pathlib import Path

from shoal_dev.sim.estate import parse_scenario, run_scenario

SCENARIOS = ("branch-flash", "multi-office", "churn", "slow-uplinks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the lab's full sizes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    folder = resources.files("shoal_dev.lab") / "scenarios"
    print("| scenario | office | T_last packet (s) | T_last flow (s) | ratio | WAN/F packet "
          "| WAN/F flow | ratio | wall packet / flow (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in SCENARIOS:
        text = (folder / f"{name}.toml").read_text()
        scenario = parse_scenario(text, name, ci=not args.full)
        documents = {}
        for mode in ("packet", "flow"):
            with tempfile.TemporaryDirectory(prefix="shoal-calibration-") as root:
                documents[mode] = run_scenario(scenario, mode=mode, seed=args.seed, root=Path(root))
        packet, flow = documents["packet"], documents["flow"]
        walls = f"{packet['measured']['wall_s']} / {flow['measured']['wall_s']}"
        for p_row, f_row in zip(packet["offices_detail"], flow["offices_detail"], strict=True):
            p_t, f_t = p_row["t_last_s"], f_row["t_last_s"]
            ratio_t = f"{f_t / p_t:.3f}" if p_t and f_t else "-"
            ratio_w = f"{f_row['wan_bytes'] / p_row['wan_bytes']:.3f}"
            office = f"{p_row['office']} ({p_row['type']})"
            print(f"| {name} | {office} | {p_t} | {f_t} | {ratio_t} | {p_row['wan_over_f']} "
                  f"| {f_row['wan_over_f']} | {ratio_w} | {walls} |")  # fmt: skip


if __name__ == "__main__":
    main()
