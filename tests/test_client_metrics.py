"""The agent says promptly that its server is silent; its counters reach the status."""

from __future__ import annotations

from shoal.client.metrics import SILENT_WARNING, discovery_hint, textfile
from shoal.wire.control import CheckInReply
from test_client_control import DIGEST, SERVER, answer, client


def test_a_silent_server_is_noticed_within_seconds_not_when_requests_give_up() -> None:
    control = client(certified=False)
    control.handle_timer(0)  # HELLO sent; nothing comes back
    for now in (0.5, 1.5, 3.5):
        control.handle_timer(now)
    assert control.silent_for(3.5) >= SILENT_WARNING
    assert control.give_up_after > 3.5  # the request would still be pending


def test_an_answer_ends_the_silence() -> None:
    control = client()
    request_id = control.check_in([], now=10.0)
    assert control.silent_for(12.0) == 2.0
    control.receive_datagram(answer(CheckInReply(DIGEST, 1), request_id=request_id), SERVER, 12.5)
    assert control.silent_for(20.0) == 0.0


def test_queries_without_any_answer_point_at_blocked_broadcast() -> None:
    counters = {"discovery": {"queries_sent": 12, "answers_received": 0, "out_of_scope": 0}}
    hint = discovery_hint(counters)
    assert hint is not None and "broadcast is blocked" in hint
    counters["discovery"]["answers_received"] = 1
    assert discovery_hint(counters) is None


def test_textfile_is_prometheus_text_with_the_device_label() -> None:
    text = textfile(
        {
            "discovery": {"queries_sent": 3, "out_of_office_answers": 1},
            "transfer": {"foreground": {"data_packets_retransmitted": 7}},
        },
        "ab12",
    )
    assert 'shoal_client_discovery_queries_sent_total{device_id="ab12"} 3' in text
    assert (
        'shoal_client_transfer_data_packets_retransmitted_total{device_id="ab12",'
        'mode="foreground"} 7'
    ) in text
