"""Control datagrams: golden bytes per type, authentication, and fuzzing."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.ids import ContentId
from shoal.wire.control import (
    UNAUTHENTICATED,
    AuthenticationFailed,
    BadPeer,
    Certificate,
    CheckIn,
    CheckInReply,
    ContentProgress,
    ControlMessage,
    ControlType,
    Hello,
    InstallReport,
    InstallStatus,
    Lease,
    LeaseDecision,
    LeaseReply,
    LicenceState,
    ManifestInfo,
    ManifestReply,
    Noted,
    Nudge,
    OfficeType,
    PeerList,
    Peers,
    RefusalCause,
    Refused,
    Register,
    Registered,
    decode_control,
    encode_control,
    pull_control,
    tag_matches,
)
from shoal.wire.errors import MalformedDatagram, UnsupportedProtocolVersion, WrongMagic

KEY = b"device-control-key-for-tests"
DEVICE = bytes(range(16))
CONTENT = ContentId(bytes(range(32, 64)))
DIGEST = bytes(range(100, 132))
PUBLIC_KEY = bytes(range(200, 232))
COUNTER = 0x0102030405060708
TOKEN = bytes(range(50, 66))


def datagram(code: int, body: bytes, request_id: int = 7) -> bytes:
    """A control datagram built by hand from the documented layout."""
    signed = (
        b"SH\x02"
        + bytes([code])
        + struct.pack(">I", request_id)
        + DEVICE
        + struct.pack(">Q", COUNTER)
        + body
    )
    if code in UNAUTHENTICATED:
        return signed + bytes(16)
    return signed + hmac.new(KEY, signed, hashlib.sha256).digest()[:16]


GOLDEN = [
    (Hello(), 0x22, bytes(128 - 48)),
    (
        Certificate(b"\x01" + bytes(40), TOKEN),
        0x23,
        b"\x00\x29\x01" + bytes(40) + TOKEN,
    ),
    (
        Register(PUBLIC_KEY, "0.1.0", "pc-7", 24, TOKEN),
        0x30,
        PUBLIC_KEY + b"\x050.1.0\x04pc-7\x18" + TOKEN,
    ),
    (
        Registered(
            "0.1.0",
            "Branch A",
            OfficeType.WIFI,
            60,
            41440,
            41442,
            41443,
            LicenceState.OVERAGE,
            3,
            (51440, 51441, 51442, 51443),
            8000,
            2000,
            2,
        ),
        0x31,
        b"\x050.1.0\x08Branch A\x01"
        + struct.pack(">HHHH", 60, 41440, 41442, 41443)
        + b"\x01"
        + struct.pack(">I", 3)
        + struct.pack(">HHHH", 51440, 51441, 51442, 51443)
        + struct.pack(">IIH", 8000, 2000, 2),
    ),
    (
        CheckIn((ContentProgress(CONTENT, 3, 10, 1000, 2000),)),
        0x32,
        b"\x01" + CONTENT.digest + struct.pack(">IIQQ", 3, 10, 1000, 2000),
    ),
    (
        CheckInReply(DIGEST, 4096, ("10.1.0.66",)),
        0x33,
        DIGEST + struct.pack(">I", 4096) + b"\x01" + bytes([10, 1, 0, 66]),
    ),
    (ManifestInfo(CONTENT), 0x34, CONTENT.digest),
    (ManifestReply(CONTENT, DIGEST, 900), 0x35, CONTENT.digest + DIGEST + struct.pack(">I", 900)),
    (Lease(CONTENT), 0x20, CONTENT.digest),
    (
        LeaseReply(CONTENT, LeaseDecision.REDIRECTED, ("10.1.0.5", 41802), 9000),
        0x21,
        CONTENT.digest + b"\x01" + bytes([10, 1, 0, 5]) + struct.pack(">HIBQ", 41802, 9000, 1, 1),
    ),
    (  # a holder of stripes 0 and 5 of 16
        LeaseReply(CONTENT, LeaseDecision.GRANTED, ("10.1.0.7", 41802), 3000, 16, 0x21),
        0x21,
        CONTENT.digest
        + b"\x00"
        + bytes([10, 1, 0, 7])
        + struct.pack(">HIBQ", 41802, 3000, 16, 0x21),
    ),
    (Peers(CONTENT), 0x36, CONTENT.digest),
    (
        PeerList(CONTENT, (("10.1.0.5", 41802), ("10.1.0.6", 41802))),
        0x37,
        CONTENT.digest
        + b"\x02"
        + bytes([10, 1, 0, 5])
        + struct.pack(">H", 41802)
        + bytes([10, 1, 0, 6])
        + struct.pack(">H", 41802),
    ),
    (
        BadPeer(CONTENT, ("10.1.0.66", 41802), 12),
        0x38,
        CONTENT.digest + bytes([10, 1, 0, 66]) + struct.pack(">HI", 41802, 12),
    ),
    (Noted(), 0x39, b""),
    (Nudge(DIGEST, 4096), 0x3A, DIGEST + struct.pack(">I", 4096)),
    (
        InstallReport(CONTENT, InstallStatus.FAILED, 3, -9, "killed"),
        0x3B,
        CONTENT.digest + b"\x03\x03\x01" + struct.pack(">q", -9) + b"\x00\x06killed",
    ),
    (
        Refused(RefusalCause.VERSION_UNSUPPORTED, "upgrade the client"),
        0x3F,
        b"\x05\x00\x12upgrade the client",
    ),
]


@pytest.mark.parametrize(
    ("body", "code", "encoded_body"), GOLDEN, ids=[type(body).__name__ for body, _, _ in GOLDEN]
)
def test_golden_bytes_both_ways(body: object, code: int, encoded_body: bytes) -> None:
    expected = datagram(code, encoded_body)
    authenticated = code not in UNAUTHENTICATED
    message = ControlMessage(7, DEVICE, body, authenticated, COUNTER)  # type: ignore[arg-type]
    assert encode_control(message, KEY if authenticated else None) == expected
    assert decode_control(expected, KEY) == message


def test_every_control_type_has_golden_bytes() -> None:
    assert {code for _, code, _ in GOLDEN} == {member.value for member in ControlType}


def test_another_key_fails_authentication() -> None:
    register = Register(PUBLIC_KEY, "0.1.0", "pc", 24)
    encoded = encode_control(ControlMessage(1, DEVICE, register, counter=3), b"other")
    with pytest.raises(AuthenticationFailed, match="tag mismatch"):
        decode_control(encoded, KEY)
    unchecked = pull_control(encoded)  # what the server reads to find the key
    assert (unchecked.body, unchecked.counter, unchecked.authenticated) == (register, 3, False)
    assert tag_matches(encoded, b"other") and not tag_matches(encoded, KEY)


def test_an_unauthenticated_refusal_is_readable_but_marked() -> None:
    refusal = ControlMessage(1, DEVICE, Refused(RefusalCause.AUTHENTICATION_FAILED, "wrong"))
    decoded = decode_control(encode_control(refusal, None), KEY)
    assert decoded.body == refusal.body
    assert decoded.authenticated is False


def test_a_hello_is_padded_so_the_largest_certificate_is_under_3x() -> None:
    from shoal.core.server_cert import MAX_CERTIFICATE_SIZE

    hello = encode_control(ControlMessage(0, DEVICE, Hello()), None)
    largest = encode_control(
        ControlMessage(0, DEVICE, Certificate(bytes(MAX_CERTIFICATE_SIZE))), None
    )
    assert len(hello) == 128
    assert len(largest) <= 3 * len(hello)


def test_prefix_errors_are_named() -> None:
    valid = encode_control(ControlMessage(1, DEVICE, Noted()), KEY)
    with pytest.raises(WrongMagic):
        decode_control(b"XX" + valid[2:], KEY)
    with pytest.raises(UnsupportedProtocolVersion):
        decode_control(valid[:2] + b"\x09" + valid[3:], KEY)
    # Version 3 is the data plane's (a chunk request with an offset): the control
    # channel keeps its own range and has none.
    with pytest.raises(UnsupportedProtocolVersion):
        decode_control(valid[:2] + b"\x03" + valid[3:], KEY)
    with pytest.raises(MalformedDatagram, match="unknown control message type"):
        decode_control(valid[:3] + b"\x2f" + valid[4:], KEY)


VALID = [encode_control(ControlMessage(9, DEVICE, body, counter=1), KEY) for body, _, _ in GOLDEN]


@settings(max_examples=10_000)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_the_named_error(data: bytes) -> None:
    with contextlib.suppress(MalformedDatagram):
        decode_control(data, KEY)


def mutate(valid: bytes, program: bytes) -> tuple[bytes, int]:
    """Apply a mutation program to a valid message: its first two bytes are where to cut
    it (0..400; no program, no cut), then up to four steps of three bytes each overwrite
    the byte at a position (0..400) with a value. One draw per example (a list of tuples
    took seven), so 10,000 examples stay quick to generate."""
    mutated = bytearray(valid)
    for step in range(2, len(program) - 2, 3):
        position = int.from_bytes(program[step : step + 2], "big") % 401
        if position < len(mutated):
            mutated[position] = program[step + 2]
    cut = int.from_bytes(program[:2], "big") % 401 if len(program) >= 2 else 400
    return bytes(mutated), cut


@settings(max_examples=10_000)
@given(st.sampled_from(VALID), st.binary(max_size=14))
def test_mutated_messages_raise_only_the_named_error(valid: bytes, program: bytes) -> None:
    mutated, cut = mutate(valid, program)
    with contextlib.suppress(MalformedDatagram):
        decode_control(mutated[:cut] if cut < len(mutated) else mutated, KEY)
    # Re-tag the mutated bytes, so that the body parsers (not only the tag check) run.
    retagged = mutated[:cut] if cut < len(mutated) - 16 else mutated[:-16]
    with contextlib.suppress(MalformedDatagram):
        decode_control(retagged + hmac.new(KEY, retagged, hashlib.sha256).digest()[:16], KEY)


def test_an_install_report_without_exit_code_and_a_long_tail_is_bounded() -> None:
    report = InstallReport(CONTENT, InstallStatus.INSTALLED, 1, None, "x" * 5000 + "end")
    encoded = encode_control(ControlMessage(1, DEVICE, report, counter=2), KEY)
    decoded = decode_control(encoded, KEY).body
    assert isinstance(decoded, InstallReport)
    assert decoded.exit_code is None
    assert len(decoded.output_tail) == 1024 and decoded.output_tail.endswith("end")
    assert len(encoded) < 1200


def test_an_install_report_with_a_bad_flag_or_too_many_attempts_is_malformed() -> None:
    for attempts, known in ((1, 2), (17, 1)):
        body = CONTENT.digest + bytes([2, attempts, known]) + bytes(8) + b"\x00\x00"
        with pytest.raises(MalformedDatagram):
            decode_control(datagram(0x3B, body), KEY)


@pytest.mark.parametrize(
    ("stripes", "mask", "match"),
    [(0, 0, "0 stripes"), (65, 1, "65 stripes"), (4, 0x10, "beyond 4 stripes")],
)
def test_a_lease_reply_with_impossible_stripes_is_malformed(
    stripes: int, mask: int, match: str
) -> None:
    body = (
        CONTENT.digest + b"\x00" + bytes([10, 1, 0, 7]) + struct.pack(">HIBQ", 1, 1, stripes, mask)
    )
    with pytest.raises(MalformedDatagram, match=match):
        decode_control(datagram(0x21, body), KEY)


@given(key=st.binary(min_size=0, max_size=100), data=st.binary(max_size=300))
def test_the_tag_is_hmac_sha256_for_any_key_and_datagram(key: bytes, data: bytes) -> None:
    """The pads hashed once per key give RFC 2104's HMAC, the first and every later time."""
    tagged = data + hmac.new(key, data, hashlib.sha256).digest()[:16]
    for _ in range(2):
        assert tag_matches(tagged, key)
        assert tag_matches(memoryview(tagged), key)
    assert not tag_matches(tagged[:-1] + bytes([tagged[-1] ^ 1]), key)
