"""``shoal client``: the agent process on a device.

Theory of operation
-------------------
The agent's identity is an X25519 key pair created at first start in
``DATA_DIR/device.key`` (mode 0600); its device ID is derived from the public key and
kept across restarts and upgrades: it is the licence seat. Reinstalling with the data
directory kept keeps the seat; a wiped data directory is a new device and takes a new
seat (retire the old one in the console, ``DELETE /api/v1/devices/{id}``, to free it).
Before its first start a device is enrolled (``shoal client enroll BUNDLE``, or
``--enrollment BUNDLE`` at first start): ``DATA_DIR/trust.json`` pins the console key
and ``DATA_DIR/enrollment.json`` (0600) holds the enrollment token and the server's
address (``shoal.client.enrollment``). ``DATA_DIR/assignments.json`` and
``DATA_DIR/registration.json`` (0600) keep the assignment document accepted last and
the last registration answer, for the next process (``shoal.client.kept_assignments``,
``shoal.client.kept_registration``: a restart whose server does not answer works
offline from them).

One asyncio loop runs ``AgentCore`` through ``ApplicationRunner``: control on an
ephemeral port to the server, discovery on the broadcast port (all addresses, so
broadcasts arrive), and the two data ports. The cache is a ``ContentStore`` in
``DATA_DIR/cache``; downloads resume from its verified chunks after any restart. The
agent never writes to it on the event loop: its ``WriteChunk`` effects go to a
``DiskWorker`` thread, whose ``ChunkWritten`` answers come back to the loop
(``shoal.client.disk``).
Every second (and when something changes) the agent writes ``DATA_DIR/status.json``
atomically; ``shoal client status`` reads it. A complete confidential download is
decrypted by the installer as it stages it, or, without an install specification, in a
worker thread into ``DATA_DIR/packages/CONTENT_ID`` (``shoal.client.plaintext``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal import __version__
from shoal.assignments import SealedContent
from shoal.client.agent import AgentConfig, AgentCore, PlaintextJob
from shoal.client.disk import ChunkRead, DiskResult
from shoal.client.disk_worker import DiskWorker, ReadWorker
from shoal.client.enrollment import EnrollmentError, enroll, load_enrollment, read_bundle
from shoal.client.host import (
    DEVICE_KEY_FILE,
    NETWORK_FILE,
    ClientSetupError,
    listening_ports,
    load_identity,
    load_network,
    local_address_toward,
    prefix_of,
    save_network,
)
from shoal.client.install import CommandFinished, InstallMachine, InstallPolicy, InstallStateError
from shoal.client.installer import (
    STAGING_DIRECTORY,
    InstallRunner,
    load_installs,
    save_installs,
)
from shoal.client.kept_assignments import KEPT_FILE, load_kept, save_kept
from shoal.client.kept_registration import (
    KEPT_REGISTRATION_FILE,
    load_registration,
    save_registration,
)
from shoal.client.memory import release_idle_memory
from shoal.client.metrics import (
    SILENT_WARNING,
    agent_counters,
    discovery_hint,
    write_textfile,
)
from shoal.client.plaintext import (
    PACKAGES_DIRECTORY,
    PlaintextCancelled,
    plaintext_stager,
    write_plaintext,
)
from shoal.client.self_upgrade import restart_needed
from shoal.client.status import (
    STATUS_FILE,
    read_status,
    render_installs,
    render_status,
    write_status,
)
from shoal.client.trust import TRUST_FILE
from shoal.core.errors import ShoalError
from shoal.core.ids import ContentId
from shoal.net.errors import AddressUnavailable
from shoal.net.runner import ApplicationRunner, Binding, sleep_or_stop
from shoal.net.udp import UdpConfig
from shoal.ports import PortSet
from shoal.protocol.transfer import Mode
from shoal.store.content_store import ContentStore
from shoal.store.errors import StoreError
from shoal.wire.control import Registered

__all__ = [
    "DEVICE_KEY_FILE",
    "NETWORK_FILE",
    "STATUS_FILE",
    "ClientConfig",
    "ClientService",
    "ClientSetupError",
    "listening_ports",
    "load_identity",
    "load_network",
    "local_address_toward",
    "prefix_of",
    "read_status",
    "render_installs",
    "render_status",
    "save_network",
    "write_status",
]

log = logging.getLogger("shoal.client")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How ``shoal client run`` was started (see its ``--help``)."""

    data_dir: Path
    server: str | None = None  # None: the enrollment's
    server_port: int | None = None  # None: the enrollment's
    enrollment: Path | None = None  # a bundle to enroll with at first start
    ip: str | None = None
    prefix: int | None = None
    hostname: str = ""
    discovery_port: int | None = None  # None: as the console set them, else the defaults
    data_port: int | None = None
    background_port: int | None = None
    cache_bytes: int | None = None
    status_seconds: float = 1.0
    bind_all: bool = True  # False: bind --ip only (several agents on one host, no broadcast)
    version: str = __version__  # another value only in compatibility tests
    install_retry_seconds: float = 30.0
    """Wait before the 2nd install attempt of a version (x4 before the 3rd)."""
    metrics_textfile: Path | None = None
    """Also write the counters here, for node-exporter's textfile collector."""


class ClientService:
    """The agent process."""

    def __init__(
        self, config: ClientConfig, store_factory: type[ContentStore] = ContentStore
    ) -> None:
        """``store_factory`` builds the cache: the lab passes a lying one (fault injection
        by the caller, never a flag of the product)."""
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.device_key = load_identity(config.data_dir)
        self.device_id = self.device_key.device_id
        try:
            if config.enrollment is not None:
                enroll(config.data_dir, read_bundle(config.enrollment))
            self.enrollment, self.trust = load_enrollment(config.data_dir)
        except EnrollmentError as error:
            raise ClientSetupError(str(error)) from None
        self.server = config.server or self.enrollment.server
        self.server_port = config.server_port or self.enrollment.server_port
        self.ip = config.ip or local_address_toward(self.server, self.server_port)
        prefix = config.prefix if config.prefix is not None else prefix_of(self.ip)
        if prefix is None:
            log.warning("subnet of %s not found; assuming /24 (pass --prefix)", self.ip)
            prefix = 24
        self.prefix = prefix
        saved_main, self.alternative = load_network(config.data_dir)
        from_bundle = listening_ports(*self.enrollment.ports) if self.enrollment.ports else None
        base = saved_main or from_bundle or PortSet()
        self.ports = PortSet(
            discovery=config.discovery_port or base.discovery,
            data=config.data_port or base.data,
            background=config.background_port or base.background,
        )
        self.store = store_factory(
            config.data_dir / "cache", capacity_bytes=config.cache_bytes, strict=False
        )
        for problem in self.store.problems:
            log.warning("cache: %s; rebuilding it from the bytes on disk", problem.reason)
            self.store.repair(problem.content_id)
        self.installs = InstallMachine(
            str(config.data_dir / STAGING_DIRECTORY),
            InstallPolicy(first_retry_seconds=config.install_retry_seconds),
        )
        self._saving: set[asyncio.Task[None]] = set()
        self._kept_digest: bytes | None = None
        """The digest of the assignment document kept on disk (``_save_kept``)."""
        self.restart_into = ""
        """The version an install put in place of this program (``shoal.client.
        self_upgrade``): ``run`` then stops and the process exits for a restart."""

    def _agent(self, listening: PortSet, now: float) -> AgentCore:
        config = self.config
        other = self.alternative if listening != self.alternative else self.ports
        extra = (other.discovery,) if other and other.discovery != listening.discovery else ()
        agent = AgentCore(
            AgentConfig(
                device_key=self.device_key,
                hostname=config.hostname or socket.gethostname(),
                ip=self.ip,
                subnet_prefix=self.prefix,
                server=(self.server, self.server_port),
                enrollment_token=self.enrollment.enrollment_token,
                trust=self.trust,
                counter_start=time.time_ns() // 1000,
                wall_offset=time.time() - now,
                control_port=0,
                version=config.version,
                discovery_port=listening.discovery,
                data_port=listening.data,
                background_port=listening.background,
                extra_broadcast_ports=extra,
            ),
            self.store,
            now,
            disk_inline=False,
            installs=self.installs,
        )
        kept = load_kept(config.data_dir / KEPT_FILE)
        agent.assignments.kept = kept
        agent.registrar.kept = load_registration(config.data_dir / KEPT_REGISTRATION_FILE, self.ip)
        self._kept_digest = hashlib.sha256(kept).digest() if kept is not None else None
        return agent

    async def _save_kept(self, agent: AgentCore) -> None:
        """Keep the document accepted last on disk (``shoal.client.kept_assignments``)."""
        assignments = agent.assignments
        if assignments.document is not None and assignments.digest != self._kept_digest:
            path = self.config.data_dir / KEPT_FILE
            await asyncio.to_thread(save_kept, path, assignments.document)
            self._kept_digest = assignments.digest

    def _bind(
        self,
        agent: AgentCore,
        listening: PortSet,
        disk: DiskWorker,
        reads: ReadWorker,
        installer: InstallRunner,
    ) -> ApplicationRunner:
        # Broadcasts reach only a socket bound to the wildcard address.
        listen = "0.0.0.0" if self.config.bind_all else self.ip
        # The console's ports first, the control socket's ephemeral port last: the kernel
        # then picks one none of ours holds (bound first, it could take the data port).
        return ApplicationRunner(
            _AgentShell(agent, disk, reads, installer, self._save_installs_now),
            [
                Binding(
                    agent.discovery,
                    listen,
                    listening.discovery,
                    UdpConfig(broadcast=True, gso=False, gro=False),
                ),
                Binding(agent.engines[Mode.FOREGROUND], listen, listening.data),
                Binding(agent.engines[Mode.BACKGROUND], listen, listening.background),
                Binding(agent.control, self.ip, 0),
            ],
        )

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        listening = self.ports
        agent = self._agent(listening, loop.time())
        runners: list[ApplicationRunner] = []

        def on_written(results: list[DiskResult]) -> None:
            now = loop.time()
            for result in results:
                agent.disk_done(result, now)
            if runners:
                runners[0].input_arrived()  # poll: announce, complete, ask for more

        def on_read(results: list[ChunkRead]) -> None:
            now = loop.time()
            for read in results:
                agent.chunk_read(read, now)
            if runners:
                runners[0].input_arrived()  # poll: transmit what was sent

        def on_installed(finished: CommandFinished) -> None:
            self.installs.command_finished(finished, loop.time())
            self._save_installs_now()  # a finished install is never run again
            if finished.exit_code is not None and not self.restart_into:
                self.restart_into = restart_needed() or ""  # a client release installed
                if self.restart_into:
                    log.warning("client %s installed: restarting into it", self.restart_into)
                    stop.set()
            if runners:
                runners[0].input_arrived()  # report it, run what follows

        saved = await asyncio.to_thread(load_installs, config.data_dir)
        if saved is not None:
            try:
                self.installs.restore(saved, loop.time())
            except InstallStateError as error:
                log.warning("%s: starting with no install records", error)
        disk = DiskWorker(self.store, loop, on_written)
        reads = ReadWorker(self.store, loop, on_read)

        def sealed_for(content_id: ContentId) -> SealedContent | None:
            download = agent.downloads.get(content_id)
            return download.confidential if download is not None else None

        installer = InstallRunner(
            loop,
            lambda command: self.store.data_path(command.content_id),
            on_installed,
            plaintext_stager(self.store, self.device_key, sealed_for),
        )
        try:
            try:
                runner = self._bind(agent, listening, disk, reads, installer)
            except AddressUnavailable as error:
                if self.alternative is None:
                    raise ClientSetupError(
                        f"cannot listen on ports {listening}: {error} (free them, or set "
                        "alternative ports in the console's P2P settings)"
                    ) from None
                log.warning(
                    "ports %s unavailable (%s): using the console's alternative ports %s",
                    listening,
                    error,
                    self.alternative,
                )
                listening = self.alternative
                agent = self._agent(listening, loop.time())
                runner = self._bind(agent, listening, disk, reads, installer)
        except BaseException:
            disk.close()
            reads.close()
            installer.close()
            raise
        runners.append(runner)
        log.info(
            "client %s (%s/%d) -> P2P server %s:%d",
            self.device_id.hex()[:8],
            self.ip,
            self.prefix,
            self.server,
            self.server_port,
        )
        last_note = ""
        silent = False
        learnt: Registered | None = None
        decrypting: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                if agent.registration is not None and agent.registration is not learnt:
                    learnt = agent.registration
                    self._remember_ports(learnt)
                    path = config.data_dir / KEPT_REGISTRATION_FILE
                    await asyncio.to_thread(save_registration, path, learnt, self.ip)
                agent.control.wall_offset = time.time() - loop.time()
                await self._save_trust(agent)
                await self._save_kept(agent)
                status = agent.status(loop.time())
                status["wall_time"] = time.time()
                status["pid"] = os.getpid()
                silent = self._add_counters(agent, status, loop.time(), silent)
                await asyncio.to_thread(write_status, config.data_dir, status)
                if agent.idle():
                    release_idle_memory()
                for job in agent.take_plaintext_jobs():
                    decrypting.add(asyncio.create_task(self._decrypt(agent, job, stop)))
                    decrypting = {task for task in decrypting if not task.done()}
                note = status["note"]
                if note != last_note:
                    (log.warning if status["refusal"] else log.info)("%s", note)
                    last_note = note
                await sleep_or_stop(stop, config.status_seconds)
        finally:
            runner.close()
            await asyncio.to_thread(disk.close)  # the writes already taken reach the disk
            await asyncio.to_thread(reads.close)
            await asyncio.to_thread(installer.close)  # a command running now ends first
            await asyncio.gather(*self._saving, return_exceptions=True)
            save_installs(config.data_dir, self.installs.to_json())
            await asyncio.gather(*decrypting, return_exceptions=True)  # they read the cache
            if agent.trust != self.trust:
                agent.trust.save(config.data_dir / TRUST_FILE)
            await self._save_kept(agent)  # a document accepted in the last second too
            status = agent.status(loop.time())
            status["wall_time"] = time.time()
            status["stopped"] = True
            status["counters"] = agent_counters(agent)  # what the whole run did
            status["counters"]["loop"] = runner.wakeup_counters()
            write_status(config.data_dir, status)
            self.store.close()

    def _save_installs_now(self) -> None:
        """Save the install records off the loop (before a command starts, after one
        ends: a crash never repeats a finished install)."""
        self.installs.changed = False
        text = self.installs.to_json()
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(save_installs, self.config.data_dir, text)
        )
        self._saving = {t for t in self._saving if not t.done()} | {task}

    def _add_counters(
        self, agent: AgentCore, status: dict[str, Any], now: float, was_silent: bool
    ) -> bool:
        """Counters into the status (and the textfile); say at once when the server is
        silent. Returns whether it is silent now."""
        counters = agent_counters(agent)
        status["counters"] = counters
        status["discovery_hint"] = discovery_hint(counters)
        silent_for = agent.control.silent_for(now)
        status["server_silent_seconds"] = round(silent_for, 1)
        silent = silent_for >= SILENT_WARNING
        if silent and not was_silent:
            log.warning(
                "the P2P server %s:%d has not answered for %.0f s: is it running, is UDP "
                "port %d open between here and there? (`shoal doctor`)",
                self.server,
                self.server_port,
                silent_for,
                self.server_port,
                extra={"server": f"{self.server}:{self.server_port}"},
            )
        elif was_silent and not silent:
            log.info("the P2P server %s:%d answers again", self.server, self.server_port)
        if self.config.metrics_textfile is not None:
            try:
                write_textfile(self.config.metrics_textfile, counters, self.device_id.hex())
            except OSError as error:
                log.warning("cannot write %s: %s", self.config.metrics_textfile, error)
        return silent

    async def _save_trust(self, agent: AgentCore) -> None:
        """Persist a newer document sequence or a rotated console key (atomically)."""
        if agent.trust != self.trust:
            await asyncio.to_thread(agent.trust.save, self.config.data_dir / TRUST_FILE)
            self.trust = agent.trust

    async def _decrypt(self, agent: AgentCore, job: PlaintextJob, stop: asyncio.Event) -> None:
        """Decrypt a complete confidential download (no install spec) off the loop."""
        directory = self.config.data_dir / PACKAGES_DIRECTORY
        store, content_id = self.store, job.content_id

        def wait_for_chunk(chunk_index: int, timeout: float) -> bool:
            try:
                return store.wait_for_chunk(content_id, chunk_index, timeout)
            except StoreError:
                time.sleep(timeout)  # removed: ``stopped`` will say so
                return False

        def stopped() -> bool:
            return stop.is_set() or content_id not in agent.downloads

        try:
            path = await asyncio.to_thread(
                functools.partial(
                    write_plaintext,
                    store,
                    content_id,
                    job.sealed,
                    self.device_key,
                    directory,
                    wait_for_chunk=wait_for_chunk,
                    stopped=stopped,
                )
            )
        except PlaintextCancelled as error:
            log.debug("decryption of %s stopped: %s", job.content_id.short, error)
            return
        except (ShoalError, OSError) as error:
            log.warning("cannot decrypt %s: %s", job.content_id.short, error)
            agent.plaintext_finished(job, None, str(error))
            return
        log.info("decrypted %s into %s", job.content_id.short, path)
        agent.plaintext_finished(job, str(path))

    def _remember_ports(self, registration: Registered) -> None:
        """Keep the console's ports for the next start (and log when they differ)."""
        main = listening_ports(
            registration.discovery_port, registration.data_port, registration.background_port
        )
        alt = registration.alternative_ports
        alternative = (
            listening_ports(alt[0], alt[2], alt[3]) if all((alt[0], alt[2], alt[3])) else None
        )
        if (main, alternative) != load_network(self.config.data_dir):
            save_network(self.config.data_dir, main, alternative)
            if main != self.ports and self.ports != alternative:
                log.warning("the console sets ports %s; restart the agent to apply them", main)


class _AgentShell:
    """The agent as ``ApplicationRunner`` drives it: after each ``poll``, the chunks it
    wants written go to the disk worker, and those peers asked for to the read worker,
    off the event loop."""

    def __init__(
        self,
        agent: AgentCore,
        disk: DiskWorker,
        reads: ReadWorker,
        installer: InstallRunner,
        save_installs: Callable[[], None],
    ) -> None:
        self.agent = agent
        self.disk = disk
        self.reads = reads
        self.installer = installer
        self.save_installs = save_installs

    def poll(self, now: float) -> None:
        self.agent.poll(now)
        effects = self.agent.take_disk_effects()
        if effects:
            self.disk.submit(effects)
        reads = self.agent.take_disk_reads()
        if reads:
            self.reads.submit(reads)
        commands = self.agent.installs.take_commands()
        if self.agent.installs.changed:
            self.save_installs()
        if commands:
            self.installer.submit(commands)

    def handle_timer(self, now: float) -> None:
        self.agent.handle_timer(now)

    def has_events(self) -> bool:
        return self.agent.has_events()

    def get_timer(self) -> float | None:
        return self.agent.get_timer()
