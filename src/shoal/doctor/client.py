"""``shoal doctor client``: the checks of a device.

Ports free and bindable, the P2P server reachable, its certificate from this device's
console, this device's key accepted, versions compatible, the licence seat, broadcast
heard on the subnet, the clock, disk space for the cache. While the agent runs on this
data directory its ports are its own and it speaks to the server itself: the doctor then
reads its status instead of registering beside it (two counters for one device would
make the server refuse one as a replay).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from shoal import __version__
from shoal.client.enrollment import EnrollmentError, load_enrollment
from shoal.client.service import (
    STATUS_FILE,
    load_identity,
    load_network,
    local_address_toward,
    prefix_of,
)
from shoal.doctor.probes import ServerAnswer, ask_server, bind_error, broadcast_probe, in_use
from shoal.health import CheckResult, check_directory
from shoal.ports import PortSet
from shoal.server.refusal_log import FIX
from shoal.wire.control import RefusalCause

CACHE_MIN_FREE = 1 << 30


def _agent_pid(data_dir: Path) -> int | None:
    """The pid of the agent running on ``data_dir`` (fresh status, live process)."""
    try:
        status = json.loads((data_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = status.get("pid")
    if status.get("stopped") or not isinstance(pid, int) or time.time() - status["wall_time"] > 10:
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def _ports(ports: PortSet, agent: int | None) -> list[CheckResult]:
    results = []
    for name, port in (
        ("discovery", ports.discovery),
        ("data", ports.data),
        ("background", ports.background),
    ):
        check = f"{name} port {port}/udp"
        error = bind_error("0.0.0.0", port)
        if error is None:
            results.append(CheckResult(check, True, "free and bindable"))
        elif in_use(error) and agent is not None:
            results.append(CheckResult(check, True, f"held by the running agent (pid {agent})"))
        else:
            results.append(
                CheckResult(
                    check,
                    False,
                    f"cannot bind: {error.strerror or error}"
                    + (" (another program holds it)" if in_use(error) else ""),
                    f"find it with `ss -ulpn 'sport = :{port}'` and stop it, or set other "
                    "ports (alternative ports) in the console's P2P settings",
                ),
            )
    return results


def _server_checks(answer: ServerAnswer, server: str) -> list[CheckResult]:
    if answer.silent:
        return [
            CheckResult(
                "server reachable",
                False,
                f"no answer from the P2P server at {server}",
                "start the P2P server (`shoal server run`), or open UDP to its control "
                "port between this device and the server",
            )
        ]
    results = [CheckResult("server reachable", True, f"{server} answers")]
    if not answer.certified:
        results.append(
            CheckResult(
                "server certificate",
                False,
                f"the answer at {server} is not a server certified by this device's "
                f"console: {answer.certificate_problem or 'no certificate'}",
                "check the server address in the enrollment; if the clock is off, set it; "
                "if the server has no certificate yet, it has not reached the console",
            )
        )
        return results
    results.append(CheckResult("server certificate", True, "signed by this device's console"))
    refused = answer.refused_unauthenticated
    if refused is not None and refused.cause is RefusalCause.AUTHENTICATION_FAILED:
        results.append(
            CheckResult(
                "key",
                False,
                f"the server cannot authenticate this device (wrong key): {refused.message}",
                "enroll again with the bundle of this server's console "
                "(`shoal client enroll --replace BUNDLE`)",
            )
        )
        return results
    if refused is not None:
        results.append(
            CheckResult(
                "key",
                False,
                f"unauthenticated refusal: {refused.message}",
                FIX.get(refused.cause, ""),
            )
        )
        return results
    results.append(CheckResult("key", True, "the server authenticates this device"))
    if answer.refused is not None and answer.refused.cause is RefusalCause.VERSION_UNSUPPORTED:
        results.append(
            CheckResult(
                "versions", False, answer.refused.message, FIX[RefusalCause.VERSION_UNSUPPORTED]
            )
        )
        return results
    results.append(CheckResult("versions", True, f"client {__version__} accepted"))
    if answer.refused is not None:
        results.append(
            CheckResult(
                "registration",
                False,
                f"{answer.refused.cause.name.lower()}: {answer.refused.message}",
                FIX.get(answer.refused.cause, ""),
            )
        )
    elif answer.registered is not None:
        registered = answer.registered
        results.append(
            CheckResult(
                "registration",
                True,
                f"office {registered.office or '(none)'} ({registered.office_type.name}), "
                f"licence {registered.licence_state.name.lower()}",
            )
        )
    return results


def _from_agent_status(data_dir: Path, pid: int) -> list[CheckResult]:
    status = json.loads((data_dir / STATUS_FILE).read_text())
    silent = float(status.get("server_silent_seconds") or 0)
    results = []
    if silent >= 3:
        results.append(
            CheckResult(
                "server reachable",
                False,
                f"the agent (pid {pid}) has had no answer from {status['server']} for "
                f"{silent:.0f} s",
                "start the P2P server, or open UDP to its control port",
            )
        )
    else:
        results.append(
            CheckResult("server reachable", True, f"the agent (pid {pid}) hears {status['server']}")
        )
    refusal = status.get("refusal")
    if refusal:
        cause = RefusalCause[refusal["cause"]]
        results.append(CheckResult("registration", False, refusal["message"], FIX.get(cause, "")))
    else:
        results.append(
            CheckResult(
                "registration",
                bool(status.get("registered")),
                status.get("note", ""),
                "see the agent's log",
            )
        )
    return results


def client_checks(
    data_dir: Path,
    *,
    server: str | None = None,
    server_port: int | None = None,
    ip: str | None = None,
    prefix: int | None = None,
    timeout: float = 3.0,
) -> list[CheckResult]:
    """Every check of a device whose agent uses ``data_dir``."""
    try:
        enrollment, trust = load_enrollment(data_dir)
        device_key = load_identity(data_dir)
    except (EnrollmentError, OSError) as error:
        return [CheckResult("enrollment", False, str(error), "run `shoal client enroll BUNDLE`")]
    results = [CheckResult("enrollment", True, f"device {device_key.device_id.hex()[:16]}")]
    host = server or enrollment.server
    port = server_port or enrollment.server_port
    try:
        local_ip = ip or local_address_toward(host, port)
    except OSError as error:
        results.append(
            CheckResult(
                "route to server",
                False,
                f"{host}: {error}",
                "check the network and the server address",
            )
        )
        return results
    subnet_prefix = prefix if prefix is not None else (prefix_of(local_ip) or 24)
    pid = _agent_pid(data_dir)
    saved, _alternative = load_network(data_dir)
    results += _ports(saved or PortSet(), pid)
    if pid is not None:
        results += _from_agent_status(data_dir, pid)
    else:
        answer = ask_server(
            (host, port),
            device_key,
            enrollment.enrollment_token,
            list(trust.console_keys),
            (__version__, socket.gethostname(), subnet_prefix),
            local_ip,
            timeout,
        )
        results += _server_checks(answer, f"{host}:{port}")
        if answer.certified:
            results.append(
                CheckResult("clock", True, "the server certificate is valid at this device's time")
            )
        elif (
            "expired" in answer.certificate_problem or "not yet valid" in answer.certificate_problem
        ):
            results.append(
                CheckResult(
                    "clock", False, answer.certificate_problem, "set this device's clock (NTP)"
                )
            )
    discovery_port = (saved or PortSet()).discovery
    peers = broadcast_probe(local_ip, subnet_prefix, discovery_port, timeout)
    if peers:
        results.append(
            CheckResult(
                "broadcast",
                True,
                f"{len(peers)} peer(s) answered on port {discovery_port}: {', '.join(peers[:5])}",
            )
        )
    else:
        results.append(
            CheckResult(
                "broadcast",
                False,
                f"no peer answered a broadcast probe on UDP port {discovery_port} of "
                f"{local_ip}/{subnet_prefix}: broadcast is blocked on this subnet (or no "
                "other shoal device runs on it)",
                f"allow UDP broadcast to port {discovery_port} on this subnet (switch, "
                "Wi-Fi client isolation, host firewall); or make the office a WiFi office "
                "in the console so the server lists peers instead",
            )
        )
    cache = data_dir / "cache"
    results.append(
        check_directory(cache if cache.is_dir() else data_dir, "cache disk space", CACHE_MIN_FREE)
    )
    return results
