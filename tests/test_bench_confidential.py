"""``shoal bench transfer --confidential``: ciphertext moved, plaintext at staging."""

from __future__ import annotations

import pytest

from shoal_dev.bench.transfer import TransferBenchOptions, format_table, run_transfer_bench


@pytest.mark.serial  # compares two measured rates
def test_the_confidential_bench_stages_the_right_plaintext_and_times_it_apart() -> None:
    """The fetcher checks the staged file's SHA-256 against the plaintext's (outside
    every timed part): ``sha256_matches`` fails if staging handed over ciphertext."""
    document = run_transfer_bench(
        TransferBenchOptions(
            size_mb=2, baseline=False, namespaces=False, confidential=True, timeout_seconds=60
        ),
        report=lambda _line: None,
    )
    shoal = document["shoal"]
    assert shoal["complete"] and shoal["sha256_matches"]
    receiver = document["shoal_processes"]["receiver"]
    assert receiver["staged_sha256_matches"]
    assert receiver["staging"]["wall_seconds"] > 0
    assert 0 < shoal["staged_mb_per_s"] < shoal["payload_mb_per_s"]
    assert "decrypted when staged" in format_table(document)
