"""Benchmark: what confidential content costs a transfer, plain and confidential alternated.

Runs ``shoal bench transfer --size-mb N --no-baseline`` and the same with
``--confidential`` one after the other, ``--pairs`` times (so that load from other
programs hits both alike), and prints for each kind the median and the spread (min-max)
of:

- ``payload MB/s``: until the last chunk (ciphertext, for a confidential package) is
  verified and written;
- ``staged MB/s``: until the staged file is in place, transfer then staging: a copy for
  a plain package, the decryption for a confidential one (what a client's installer
  does before it runs the install command);
- receiver CPU s/GB over the transfer, and CPU s/GB of the staging alone;

and the per-pair ratios confidential / plain. CPU seconds per GB are disturbed less by
other programs than MB/s are. Figures, not assertions: say how loaded the machine was
(the load average is printed before and after).

    .venv/bin/python benchmarks/confidential_transfer_pairs.py --pairs 10 --size-mb 64
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from shoal_dev.bench.transfer import TransferBenchOptions, run_transfer_bench

FIGURES = (
    ("payload MB/s", "payload_mb_per_s", "{:.1f}"),
    ("staged MB/s", "staged_mb_per_s", "{:.1f}"),
    ("recv CPU s/GB", "receiver_cpu_seconds_per_gb", "{:.2f}"),
    ("send CPU s/GB", "sender_cpu_seconds_per_gb", "{:.2f}"),
    ("staging CPU s/GB", "staging_cpu_seconds_per_gb", "{:.2f}"),
)


def spread(values: list[float], pattern: str) -> str:
    ordered = sorted(values)
    middle = pattern.format(statistics.median(ordered))
    return f"{middle} ({pattern.format(ordered[0])}-{pattern.format(ordered[-1])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument(
        "--namespaces", action="store_true", help="veth between namespaces (default: loopback)"
    )
    options = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for number in range(options.pairs):
        for confidential in (number % 2 == 1, number % 2 == 0):  # alternate which goes first
            document = run_transfer_bench(
                TransferBenchOptions(
                    size_mb=options.size_mb,
                    baseline=False,
                    namespaces=options.namespaces,
                    confidential=confidential,
                ),
                lambda _line: None,
            )
            figures = document["shoal"]
            runs[confidential].append(figures)
            print(
                f"pair {number + 1}: {'confidential' if confidential else 'plain':<12} "
                + "  ".join(
                    f"{label} {pattern.format(figures[key])}" for label, key, pattern in FIGURES
                ),
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")
    print(
        f"{options.size_mb} MB, {options.pairs} alternated pairs, {document['link']}; "
        "median (min-max):"
    )
    for label, key, pattern in FIGURES:
        plain = [run[key] for run in runs[False]]
        sealed = [run[key] for run in runs[True]]
        ratios = [c / p for c, p in zip(sealed, plain, strict=True) if p]
        print(
            f"  {label:<18} plain {spread(plain, pattern):<24} "
            f"confidential {spread(sealed, pattern):<24} "
            f"per pair {spread(ratios, '{:.2f}')}x"
        )


if __name__ == "__main__":
    main()
