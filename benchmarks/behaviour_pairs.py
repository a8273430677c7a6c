"""Issue 15's target "behaviour unchanged": two builds alternated over the lab's four
scenarios (CI sizes, shoal only) and the transfer benchmark through a shaped link.

Each round runs every item once per build, the order of the builds rotated every round,
so both builds see the same load. Printed per item and figure: each build's median
[min-max] and the per-round ratio (this build / the other) median [min-max]. A build is a
checkout with its own virtual environment (``make .venv/.installed`` in it). Run as root
(network namespaces):

    git -C . worktree add --detach /tmp/before da36445 && make -C /tmp/before .venv/.installed
    .venv/bin/python benchmarks/behaviour_pairs.py /tmp/before --rounds 4

Figures, not assertions: the load average is printed beside each round.

Runs at the same time on one machine need their own namespaces: ``--prefix`` and
``--base`` name the lab's (as ``shoal lab run`` takes them), and the transfer
benchmark's two namespaces get the same prefix and a /24 under the base (set in the
benchmark module before its command runs, since older builds have no option for it).

Each build's sources are compiled to bytecode first (as ``make bench`` does): where
PYTHONDONTWRITEBYTECODE is set (CI's containers, this machine) every client process
would otherwise compile shoal from source, about 0.55 s of CPU per client on the lab's
machine, the same for both builds (da36445 and main), which an installed client never
spends, and which was about half of "CPU s/client" in branch-flash.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SCENARIOS = ("branch-flash", "multi-office", "churn", "corrupt-peer")
TRANSFERS = (("rate20", 20, 8), ("rate100", 100, 32))


def lab_figures(document: dict[str, Any]) -> dict[str, float]:
    row = document["systems"][0]
    offices = row.get("offices") or []
    wan = statistics.mean(o["wan_in_over_package"] for o in offices) if offices else 0.0
    return {
        "ok": 1.0 if row["status"] == "ok" and row["all_sha256_ok"] else 0.0,
        "T_last s": row["t_last_s"] or float("nan"),
        "WAN in / F": wan,
        "CPU s/client": row["cpu_seconds_per_client"],
    }


def transfer_figures(document: dict[str, Any]) -> dict[str, float]:
    run = document["shoal_runs"][0]
    return {
        "ok": 1.0,
        "MB/s": run["payload_mb_per_s"],
        "recv CPU s/GB": run["receiver_cpu_seconds_per_gb"],
    }


#: Runs ``shoal ARGS`` with the transfer benchmark's namespaces renamed: argv is
#: PREFIX BASE ARGS. The module is ``shoal_dev.bench.transfer`` (``shoal.bench`` before).
_TRANSFER_IN_OWN_NAMESPACES = """
import sys
prefix, base, *args = sys.argv[1:]
try:
    import shoal_dev.bench.transfer as bench
except ImportError:
    import shoal.bench.transfer as bench
bench.NAMESPACE_PREFIX = prefix
create = bench.TwoHostLab.create.__func__
bench.TwoHostLab.create = classmethod(
    lambda cls, p, tag, subnet=base + ".77.0/24": create(cls, p, tag, subnet)
)
from shoal.cli import main
sys.argv = ["shoal", *args]
sys.exit(main())
"""


def run_item(
    build: Path, item: str, out: Path, prefix: str, base: str, chunk_kib: int | None = None
) -> dict[str, float]:
    venv = build / ".venv" / "bin"
    if item in SCENARIOS:
        command = [str(venv / "shoal"), "lab", "run", item, "--ci", "--system", "shoal"]
        if chunk_kib is not None:
            command += ["--chunk-kib", str(chunk_kib)]
        command += ["--prefix", prefix, "--base", base, "--json", str(out)]
        parse = lab_figures
    else:
        _, rate, size = next(t for t in TRANSFERS if t[0] == item)
        command = [str(venv / "python"), "-c", _TRANSFER_IN_OWN_NAMESPACES, prefix, base]
        command += ["bench", "transfer", "--rate-mbit", str(rate), "--size-mb", str(size)]
        command += ["--no-baseline", "--json", str(out)]
        parse = transfer_figures
    done = subprocess.run(command, cwd=build, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not out.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        print(f"  {build.name} {item}: failed ({done.returncode}) {tail}", flush=True)
        return {"ok": 0.0}
    return parse(json.loads(out.read_text()))


def compile_bytecode(build: Path) -> None:
    """Compile ``build``'s sources once, so its processes load bytecode (module docstring)."""
    folders = [str(build / f) for f in ("src", "dev/src") if (build / f).is_dir()]
    python = str(build / ".venv" / "bin" / "python")
    subprocess.run([python, "-m", "compileall", "-q", *folders], check=True, capture_output=True)


def spread(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{statistics.median(values):.3g} [{min(values):.3g}-{max(values):.3g}] ({len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other build's checkout (with .venv)")
    parser.add_argument("--this", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", nargs="*", default=[*SCENARIOS, *(t[0] for t in TRANSFERS)])
    parser.add_argument("--prefix", default="bhp-", help="namespace name prefix")
    parser.add_argument("--base", default="10.219", help="first two octets of the subnets")
    parser.add_argument(
        "--this-chunk-kib",
        type=int,
        help="this build's lab packages in chunks of this size (KiB; `shoal lab run "
        "--chunk-kib`): to compare at the other build's chunk policy (1 MiB before 54f271d)",
    )
    options = parser.parse_args()
    builds = [options.this.resolve(), options.other.resolve()]
    names = ["this", "other"]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for build in builds:
        compile_bytecode(build)
    with tempfile.TemporaryDirectory(prefix="behaviour-") as scratch:
        for number in range(options.rounds):
            order = [0, 1] if number % 2 == 0 else [1, 0]
            print(f"round {number + 1}: load {os.getloadavg()}", flush=True)
            for item in options.items:
                for index in order:
                    out = Path(scratch) / f"{names[index]}-{item}-{number}.json"
                    chunk_kib = options.this_chunk_kib if index == 0 else None
                    figures = run_item(
                        builds[index], item, out, options.prefix, options.base, chunk_kib
                    )
                    results.setdefault((names[index], item), []).append(figures)
                    shown = ", ".join(f"{k} {v:.3g}" for k, v in figures.items())
                    print(f"  {names[index]:5} {item:13} {shown}", flush=True)
    print(f"\nthis = {builds[0]}, other = {builds[1]}; median [min-max] (n)")
    print("| item | figure | this | other | this / other per round |")
    print("|---|---|---|---|---|")
    for item in options.items:
        mine, theirs = results.get(("this", item), []), results.get(("other", item), [])
        for figure in sorted({k for r in mine + theirs for k in r}):
            a = [r.get(figure, float("nan")) for r in mine]
            b = [r.get(figure, float("nan")) for r in theirs]
            if figure == "ok":
                print(f"| {item} | ok | {int(sum(a))}/{len(a)} | {int(sum(b))}/{len(b)} | |")
                continue
            ratios = [x / y for x, y in zip(a, b, strict=False) if y and x == x and y == y]
            print(f"| {item} | {figure} | {spread(a)} | {spread(b)} | {spread(ratios)} |")
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
