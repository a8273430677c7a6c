"""Bad input over the whole API (schemathesis, from the served OpenAPI document).

Every operation gets generated valid and invalid requests, authenticated as an admin and
as an activated P2P server. The answer must never be a 5xx, and every 4xx must carry a
``detail`` message that says what is wrong.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis import GenerationMode

from .conftest import ADMIN_PASSWORD, CSV_TOPOLOGY, FakeClock, Harness, make_harness

HEADERS: dict[str, str] = {}
EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "10"))
STATUSES: dict[int, int] = {}


@pytest.fixture
def console_schema(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str | None,
) -> Iterator[schemathesis.BaseSchema]:
    monkeypatch.setenv("SHOAL_ADMIN_PASSWORD", ADMIN_PASSWORD)
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "console"
    from datetime import UTC, datetime

    harness: Harness = make_harness(
        data_dir,
        database_url,
        FakeClock(datetime(2026, 6, 1, tzinfo=UTC)),
        feed_wait_seconds=0.05,  # the fuzzer's long polls of the feed must not stall it
    )
    harness.set_topology(CSV_TOPOLOGY.replace("10.0.0.0/24", "127.0.0.0/8"))
    harness.save_licence(seats=5, expires=date(2027, 1, 1))
    harness.upload("Fixture app", "1.0", b"fixture content")
    registered = harness.client.post(
        "/api/v1/link/register",
        json={"server_id": "srv-1", "name": "central", "address": "127.0.0.1"},
        headers=harness.link_headers(),
    )
    assert registered.status_code == 200, registered.text
    HEADERS.clear()
    HEADERS.update(harness.headers)
    HEADERS.update(harness.link_headers())
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", harness.client.app)
    # Revoking tokens at random would revoke the fuzzer's own credentials.
    yield schema.exclude(method="DELETE", path="/api/v1/tokens/{token_id}")
    harness.client.close()
    harness.state.close()


def check_answer(case: schemathesis.Case) -> None:
    response = case.call(headers=dict(HEADERS))
    STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if 400 <= response.status_code < 500:
        detail = response.json().get("detail")
        assert isinstance(detail, str) and len(detail) > 5, (
            f"{case.method} {case.formatted_path} -> {response.status_code} without a message: "
            f"{response.text[:300]}"
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "database_url"),
    [
        (GenerationMode.NEGATIVE, "sqlite"),
        (GenerationMode.POSITIVE, "sqlite"),
        # Requests that break the schema are refused by the same pydantic models before any
        # SQL, whatever the database: on PostgreSQL only valid-shaped requests (which do
        # reach it: NUL bytes, integers beyond 64 bits, constraints) are worth fuzzing.
        (GenerationMode.POSITIVE, "postgresql"),
    ],
    indirect=["database_url"],
)
def test_bad_input_gets_a_4xx_that_says_what_is_wrong(
    console_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in console_schema.get_all_operations()]
    assert len(operations) > 40
    fuzzed = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            check_answer(case)

        try:
            fuzz()
        except Unsatisfiable:
            # No invalid request exists (e.g. GET /health has no parameters).
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        fuzzed += 1
    assert fuzzed > 20


def teardown_module() -> None:
    if os.environ.get("SHOAL_FUZZ_EXAMPLES"):
        print("status codes seen:", dict(sorted(STATUSES.items())))
