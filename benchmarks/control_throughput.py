"""Check-ins per second through the P2P server's control plane (authenticate + decide).

Every control datagram costs the server one HMAC-SHA256 with the device's cached
control key (the X25519 + HKDF runs once per device, at its first REGISTER). This sends
``--devices`` registrations, then ``--rounds`` check-ins per device, through the real
``ServerControl`` and ``ServerCore``, and prints the rates. No sockets.
Run: ``.venv/bin/python benchmarks/control_throughput.py``.
"""

from __future__ import annotations

import argparse
import os
import time

from shoal.core.identity import DeviceKey, control_key
from shoal.core.packing import pack_bytes
from shoal.core.signing import SigningKey
from shoal.server.control import ServerControl
from shoal.server.core import ServerCore, ServerSettings
from shoal.server.limits import AbuseLimits
from shoal.topology import parse_json
from shoal.wire.control import CheckIn, ContentProgress, ControlMessage, Register, encode_control

TOKEN = os.urandom(16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    arguments = parser.parse_args()
    identity = DeviceKey.generate()
    unlimited = AbuseLimits(
        register_burst=1e12,
        request_burst=1e12,
        new_devices_per_address=10**9,
        new_devices_burst=1e12,
    )
    core = ServerCore(ServerSettings(enrollment_token=TOKEN, identity=identity, limits=unlimited))
    core.topology = parse_json(
        {"offices": [{"office": "Central Office", "parent": None, "subnets": ["10.0.0.0/8"]}]}
    )
    core.licence.active = True
    manifest = pack_bytes(os.urandom(100_000), 65536)
    core.add_manifest(SigningKey.generate().sign(manifest).encode())
    server = ServerControl(core)
    devices = []
    for number in range(arguments.devices):
        key = DeviceKey.generate()
        shared = key.exchange(identity.public_raw)
        devices.append(
            (key, control_key(shared, TOKEN, key.public_raw, identity.public_raw), number)
        )

    def address(number: int) -> tuple[str, int]:
        return f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}", 50000

    def register(key: DeviceKey, tag_key: bytes, number: int) -> bytes:
        # The address token a HELLO from that address would have been given.
        token = server.address_tokens.issue(address(number)[0], 0.0)
        body = Register(key.public_raw, "0.1.0", "pc", 24, address_token=token)
        return encode_control(ControlMessage(1, key.device_id, body, counter=1), tag_key)

    registers = [register(key, tag_key, number) for key, tag_key, number in devices]
    started = time.perf_counter()
    for (_, _, number), datagram in zip(devices, registers, strict=True):
        server.receive_datagram(datagram, address(number), 0.0)
        server.datagrams_to_send(0.0)
    registered = time.perf_counter() - started
    if len(core.clients) != len(devices):
        raise SystemExit(f"only {len(core.clients)} of {len(devices)} devices registered")
    progress = CheckIn((ContentProgress(manifest.content_id, 1, 2, 0, 0),))
    check_ins = [
        (
            encode_control(ControlMessage(2, key.device_id, progress, counter=2 + n), tag_key),
            address(number),
        )
        for n in range(arguments.rounds)
        for key, tag_key, number in devices
    ]
    started = time.perf_counter()
    for datagram, source in check_ins:
        server.receive_datagram(datagram, source, 1.0)
        if len(server._outbox) > 4096:
            server.datagrams_to_send(1.0)
    elapsed = time.perf_counter() - started
    answered = server.counters.answered - len(registers)
    if answered != len(check_ins):
        raise SystemExit(f"only {answered} of {len(check_ins)} check-ins were answered")
    print(f"registrations: {len(registers) / registered:,.0f}/s (one X25519 + HKDF each)")
    print(
        f"check-ins: {len(check_ins) / elapsed:,.0f}/s, {elapsed / len(check_ins) * 1e6:.1f} us "
        f"each (all {answered:,} answered)"
    )


if __name__ == "__main__":
    main()
