"""``shoal server``: the P2P server process.

Theory of operation
-------------------
One asyncio loop runs ``ServerNode`` (control and data planes over UDP, through
``ApplicationRunner``) and a sync task that talks to the console over HTTPS:

in rounds              register (activation, licence), follow the change feed,
                         fetch new content into the origin store (chunk-verified,
                         resumable), refresh assignments, topology and settings.
                         The feed is long-polled: the console holds an empty
                         answer up to ``sync_seconds``, so a change reaches the
                         server (and, by a nudge, its clients) at once; a console
                         that cannot be reached, or has not activated the server,
                         is asked again after ``sync_seconds``;
every ``report_seconds`` report the client registry (the console answers which
                         devices hold a seat) and download statistics
                         (``shoal.server.registry_report``).
every ``LEASE_SAVE_SECONDS`` save the rendezvous leases and the delivery ledger,
                         and the registry rows of the devices that registered
                         (``shoal.server.state_saver``).

The HTTPS calls are blocking (httpx) and run in a worker thread; what they return is
applied to ``ServerCore`` on the loop thread, which alone touches it. Everything the
console said, the feed cursor, the client registry and the rendezvous leases (with
what the server already delivered into each office) are kept in SQL, so a restarted
server serves its clients before it reaches the console again, and each office keeps
its holders and fetches no second WAN copy.

The server's identity is an X25519 key in ``DATA_DIR/server.key`` (created at first
start); it sends the public key when it registers with the console and keeps the
certificate the console returns (in SQL, with the key it certifies), which it hands to
clients over UDP. Clients authenticate with their own device keys; the *enrollment
token* (``client_key_for``, derived from the server's authentication key, and in every
device's enrollment bundle) is mixed into every control key: a device never holds the
key that talks to the console, and neither the token nor any key is logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import stamina
from prometheus_client import CollectorRegistry

from shoal.assignments import encode_envelope
from shoal.core.changes import ChangeKind
from shoal.core.identity import DeviceKey, enrollment_token_for
from shoal.core.ids import ContentId
from shoal.core.server_cert import VALIDITY_SECONDS, CertificateInvalid, read_certificate
from shoal.health import CheckResult, check_database, check_directory
from shoal.licensing import LicenceState
from shoal.net.runner import ApplicationRunner, Binding, sleep_or_stop
from shoal.ports import PortSet
from shoal.protocol.transfer import Mode
from shoal.server.config import ServerConfig
from shoal.server.console_link import (
    ConsoleLink,
    ConsoleLinkError,
    DownloadTotals,
    ReportedBan,
    ReportedClient,
    ReportedHolders,
)
from shoal.server.core import BandwidthLimit, ServerCore, ServerSettings
from shoal.server.db import open_database, sqlite_url
from shoal.server.metrics import ServerCollector
from shoal.server.metrics_listener import MetricsListener
from shoal.server.node import ServerNode
from shoal.server.refusal_log import RefusalLog
from shoal.server.registry_report import registry_report_sliced
from shoal.server.state_saver import StateSaver
from shoal.server.state_store import StateStore
from shoal.server.swarm_report import swarm_report
from shoal.store.content_store import ContentStore
from shoal.topology import parse_json

__all__ = [
    "SERVER_KEY_FILE",
    "ServerConfig",
    "ServerService",
    "StateStore",
    "SyncOutcome",
    "client_key_for",
]

log = logging.getLogger("shoal.server")
MIN_SYNC_ROUND = 0.5


SERVER_KEY_FILE = "server.key"


def client_key_for(auth_key: str) -> bytes:
    """The enrollment token of this server's clients (see ``enrollment_token_for``)."""
    return enrollment_token_for(auth_key)


@dataclass(slots=True)
class SyncOutcome:
    """What one sync with the console learnt (computed off the loop thread)."""

    activated: bool
    message: str
    licence: dict[str, Any]
    cursor: int
    manifests: list[bytes] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    envelope: dict[str, str] | None = None
    topology: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    certificate: bytes | None = None


class ServerService:
    """The P2P server process: UDP planes, console sync, persistence."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        url = config.database_url or sqlite_url(config.data_dir / "server.sqlite3")
        self.state = StateStore(open_database(url))
        server_id = self.state.get("server_id")
        if server_id is None:
            server_id = uuid.uuid4().hex
            self.state.put({"server_id": server_id})
        self.server_id = server_id
        self.origin = ContentStore(config.data_dir / "origin", strict=False)
        self.ports = self._resolve_ports()
        self.identity = DeviceKey.load_or_create(config.data_dir / SERVER_KEY_FILE)
        settings = ServerSettings(
            enrollment_token=client_key_for(config.auth_key),
            identity=self.identity,
            checkin_seconds=config.checkin_seconds,
            discovery_port=self.ports.discovery,
            data_port=self.ports.data,
            background_port=self.ports.background,
            lease_seconds=config.lease_seconds,
            direct_outside_offices=config.direct_outside_offices,
            office_links=config.office_links,
            limits=config.limits,
        )
        self.core = ServerCore(settings)
        self.node: ServerNode | None = None
        self.runner: ApplicationRunner | None = None
        self.link = ConsoleLink(
            config.console_url,
            config.auth_key,
            server_id,
            name=config.name,
            address=config.address,
            ca_certificate=config.console_ca,
            public_key=self.identity.public_raw,
        )
        self.console_note = "not yet in touch with the console"
        self.started_at = time.monotonic()
        self.last_synced: float | None = None
        """When the change feed was last read in full (monotonic); the feed lag metric."""
        self.sync_failures = 0
        self.metrics_listener: MetricsListener | None = None
        self.refusal_log = RefusalLog()
        self.saver = StateSaver(self.state, self.core, self.refusal_log)
        self._restore()

    def _resolve_ports(self) -> PortSet:
        """Explicit options first, then the console's last settings, then defaults."""
        config = self.config
        saved = self.state.get("settings")
        base = PortSet()
        if saved is not None:
            base = PortSet.from_console(json.loads(saved).get("ports") or {}, base)
        return PortSet(
            discovery=config.discovery_port or base.discovery,
            control=config.control_port or base.control,
            data=config.data_port or base.data,
            background=config.background_port or base.background,
        )

    # ------------------------------------------------------------ persistence

    def _restore(self) -> None:
        """What the console said before the restart, so clients are served at once."""
        core = self.core
        now = time.monotonic()
        for record in self.state.load_clients(now):
            core.restore_client(record)
        licence = self.state.get("licence")
        if licence is not None:
            self._apply_licence(json.loads(licence), self.state.get("activated") == "1")
        topology = self.state.get("topology")
        if topology is not None:
            core.topology = parse_json(json.loads(topology))
        envelope = self.state.get("assignments")
        if envelope is not None:
            core.set_assignments(encode_envelope(json.loads(envelope)))
        for info in self.origin.entries():
            core.add_manifest(self.origin.manifest_bytes(info.content_id))
        settings = self.state.get("settings")
        if settings is not None:
            self._apply_settings(json.loads(settings))
        certificate = self.state.get("certificate")
        if certificate is not None:
            self._apply_certificate(bytes.fromhex(certificate))
        leases = self.state.load_leases(time.time())
        if leases is not None:
            saved, elapsed = leases
            core.wan_copy.restore_lease_state(saved, now, elapsed)

    def _apply_certificate(self, certificate: bytes) -> bool:
        """Serve ``certificate`` if it certifies this server's current key."""
        try:
            certified = read_certificate(certificate).public_key
        except CertificateInvalid as error:
            log.warning("the console's server certificate is unreadable: %s", error)
            return False
        if certified != self.identity.public_raw:
            return False  # for an older key of this server: wait for the console's new one
        current = self.core.certificate
        if current is not None:
            held = read_certificate(current)
            if held.public_key == certified and held.not_after - time.time() > VALIDITY_SECONDS / 2:
                return False  # the one we serve is good for weeks: no write, no log line
        self.core.certificate = certificate
        if current is None:
            log.info("server certificate from the console: clients can authenticate us")
        return True

    def _apply_licence(self, licence: dict[str, Any], activated: bool) -> None:
        """The licence as the console describes it, for admitting clients.

        An activated server keeps serving after the licence expires (its devices keep
        their content); it then refuses new devices, with the console's explanation.
        """
        view = self.core.licence
        view.active = activated
        view.expired = licence.get("state") == LicenceState.EXPIRED
        view.seats_over = int(licence.get("seats_over", 0))
        view.message = str(licence.get("message", ""))
        if not activated:
            view.message = (
                "the P2P server is not activated: save the licence key in the console "
                f"({view.message})"
            )

    # ------------------------------------------------------------------ sync

    def sync_once(self, cursor: int, first: bool, wait: float = 0.0) -> SyncOutcome:
        """Blocking: one round with the console (runs in a worker thread).

        ``wait``: how long the console may hold the feed's answer until a change comes.
        """
        registration = self.link.register()
        outcome = SyncOutcome(
            registration.activated, registration.message, registration.licence, cursor
        )
        outcome.certificate = registration.certificate
        if not registration.activated:
            return outcome
        other_changes: set[ChangeKind] = set()
        while True:
            page = self.link.changes(outcome.cursor, wait=wait)
            wait = 0.0  # only the first page waits
            for change in page.changes:
                if change.kind is ChangeKind.CONTENT_ADDED and change.subject:
                    info = self.link.download_into(self.origin, change.subject)
                    outcome.manifests.append(self.origin.manifest_bytes(info.content_id))
                elif change.kind is ChangeKind.CONTENT_REMOVED and change.subject:
                    outcome.removed.append(change.subject)
                elif change.kind is not None:
                    other_changes.add(change.kind)
                outcome.cursor = change.seq
            outcome.cursor = max(outcome.cursor, page.last_seq)
            if not page.more:
                break
        if first or ChangeKind.ASSIGNMENTS_CHANGED in other_changes or outcome.manifests:
            outcome.envelope = self.link.signed_assignments()
        if first or ChangeKind.TOPOLOGY_CHANGED in other_changes:
            outcome.topology = self.link.topology()
        if first or ChangeKind.SETTINGS_CHANGED in other_changes:
            outcome.settings = self.link.settings()
        return outcome

    def apply(self, outcome: SyncOutcome) -> None:
        """On the loop thread: make the core say what the console said."""
        core = self.core
        self._apply_licence(outcome.licence, outcome.activated)
        values = {
            "licence": json.dumps(outcome.licence),
            "activated": "1" if outcome.activated else "0",
        }
        certificate = outcome.certificate
        if certificate and certificate != core.certificate and self._apply_certificate(certificate):
            values["certificate"] = certificate.hex()
        self.console_note = outcome.message
        for manifest_file in outcome.manifests:
            content_id = core.add_manifest(manifest_file)
            log.info("content %s ready to serve", content_id.short)
        for content_hex in outcome.removed:
            content_id = ContentId.from_hex(content_hex)
            core.remove_manifest(content_id)
            if content_id in self.origin:
                self.origin.remove(content_id)
        if outcome.envelope is not None:
            core.set_assignments(encode_envelope(outcome.envelope))
            values["assignments"] = json.dumps(outcome.envelope)
            if self.runner is not None:
                self.runner.input_arrived()  # nudge the clients now
        if outcome.topology is not None:
            core.topology = parse_json(outcome.topology)
            values["topology"] = json.dumps(outcome.topology)
        if outcome.settings is not None:
            self._apply_settings(outcome.settings)
            values["settings"] = json.dumps(outcome.settings)
        values["cursor"] = str(outcome.cursor)
        self.state.put(values)

    def _apply_settings(self, settings: dict[str, Any]) -> None:
        """Ports, alternative ports and bandwidth policy, passed on to clients.

        The discovery port, alternative ports and bandwidth caps take effect for every
        client at its next registration. This server's own ports change at its next
        start (the console's are kept in the state and used when no --*-port is given).
        """
        wanted = settings.get("ports") or {}
        console_ports = PortSet.from_console(wanted, self.ports)
        if console_ports != self.ports:
            log.warning(
                "the console sets ports %s; this server runs on %s: restart it to apply",
                console_ports,
                self.ports,
            )
        alternative = settings.get("alternative_ports")
        alternative_ports = (0, 0, 0, 0)
        if alternative:
            alt = PortSet.from_console(alternative, self.ports)
            alternative_ports = alt.numbers()
        bandwidth = {
            entry["office"]: BandwidthLimit(
                foreground_kbps=int(entry.get("foreground_kbps") or 0),
                background_kbps=int(entry.get("background_kbps") or 0),
                max_downloads=int(entry.get("max_concurrent_downloads") or 0),
            )
            for entry in settings.get("bandwidth") or []
        }
        core = self.core
        core.settings = dataclasses.replace(
            core.settings,
            discovery_port=console_ports.discovery,
            alternative_ports=alternative_ports,
            bandwidth=bandwidth,
        )

    def report_once(
        self,
        clients: list[ReportedClient],
        totals: list[DownloadTotals],
        swarm: tuple[list[ReportedBan], list[ReportedHolders]] = ([], []),
    ) -> dict[str, Any]:
        """Blocking: report the registry, statistics, bans and rendezvous holders (runs
        in a worker thread)."""
        answer = self.link.report_clients(clients)
        if totals:
            self.link.report_stats(totals)
        self.link.report_swarm(*swarm)
        return answer

    def apply_report_answer(self, answer: dict[str, Any]) -> None:
        refusals = {}
        for placed in answer.get("clients", []):
            if not placed.get("licensed", True):
                refusals[bytes.fromhex(placed["device_id"])] = placed.get("message") or (
                    "no licence seat for this device"
                )
        self.core.device_refusals = refusals
        licence = answer.get("licence")
        if licence is not None:
            self._apply_licence(licence, self.state.get("activated") == "1")

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event) -> None:
        """Serve clients and follow the console until ``stop`` is set."""
        config = self.config
        loop = asyncio.get_running_loop()
        # The server's control counters follow the wall clock (microseconds), so they
        # keep growing across restarts: clients refuse an older one.
        counter_base = time.time_ns() // 1000 - int(loop.time() * 1_000_000)
        self.node = ServerNode(
            self.core,
            self.origin,
            loop.time(),
            control_port=self.ports.control,
            counter_base=counter_base,
        )
        self.runner = ApplicationRunner(
            self.node,
            [
                Binding(self.node.control, config.bind, self.ports.control),
                Binding(self.node.engines[Mode.FOREGROUND], config.bind, self.ports.data),
                Binding(self.node.engines[Mode.BACKGROUND], config.bind, self.ports.background),
            ],
        )
        log.info(
            "P2P server %s listening on %s (control %d, data %d/%d); server key %s",
            self.server_id[:8],
            config.bind,
            self.ports.control,
            self.ports.data,
            self.ports.background,
            self.identity.public_raw.hex()[:16],
        )
        if config.metrics is not None:
            registry = CollectorRegistry(auto_describe=True)
            registry.register(ServerCollector(self))
            self.metrics_listener = MetricsListener(registry, self.readiness_checks)
            await self.metrics_listener.start(*config.metrics)
        tasks = [
            asyncio.create_task(self._sync_loop(stop)),
            asyncio.create_task(self._report_loop(stop)),
            asyncio.create_task(self.saver.save_loop(stop)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.metrics_listener is not None:
                await self.metrics_listener.close()
            self.saver.save_now()
            self.runner.close()
            self.origin.close()
            self.link.close()

    def readiness_checks(self) -> list[CheckResult]:
        """Blocking: the database answers, the origin store is writable with room."""
        engine = self.state.sessions.kw["bind"]
        return [check_database(engine), check_directory(self.origin.root, "origin store")]

    async def _sync_round(self, cursor: int, first: bool, wait: float) -> SyncOutcome:
        """One round with the console, tried again until it succeeds: the waits grow
        exponentially from ``sync_seconds`` to ``retry_max_seconds``, with jitter, so a
        console that comes back is not hit by every server at the same instant."""
        config = self.config
        async for attempt in stamina.retry_context(
            on=ConsoleLinkError,
            attempts=None,
            timeout=None,
            wait_initial=config.sync_seconds,
            wait_max=max(config.sync_seconds, config.retry_max_seconds),
            wait_jitter=config.sync_seconds,
        ):
            with attempt:
                try:
                    return await asyncio.to_thread(self.sync_once, cursor, first, wait)
                except ConsoleLinkError as error:
                    self.console_note = str(error)
                    self.sync_failures += 1
                    # The same cause again is counted by the log's RepeatFilter, not printed.
                    log.warning(
                        "console sync failed: %s",
                        error,
                        extra={"cause": type(error).__name__, "console": config.console_url},
                    )
                    raise
        raise AssertionError("unreachable: retries without limit")

    async def _sync_loop(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            cursor = int(self.state.get("cursor") or 0)
            wait = 0.0 if first else self.config.sync_seconds
            started = time.monotonic()
            outcome = await self._sync_round(cursor, first, wait)
            self.apply(outcome)
            if not outcome.activated:
                log.warning("%s", outcome.message)
                await sleep_or_stop(stop, self.config.sync_seconds)
                continue
            first = False
            self.last_synced = time.monotonic()
            # The long poll paces the rounds; this only keeps them MIN_SYNC_ROUND apart.
            elapsed = time.monotonic() - started
            await sleep_or_stop(stop, max(0.0, MIN_SYNC_ROUND - elapsed))

    async def _report_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await sleep_or_stop(stop, self.config.report_seconds)
            await self.saver.save_registry_soon()
            if self.state.get("activated") != "1":
                continue
            clients, totals = await registry_report_sliced(self.core)
            swarm = swarm_report(self.core, asyncio.get_running_loop().time(), time.time())
            try:
                answer = await asyncio.to_thread(self.report_once, clients, totals, swarm)
            except ConsoleLinkError as error:
                log.warning("report to the console failed: %s", error)
            else:
                self.apply_report_answer(answer)
