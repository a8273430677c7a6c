"""The client's standing with its P2P server: registration, check-ins, nudges.

Theory of operation
-------------------
``RegistrationMachine`` registers (``REGISTER`` -> ``Registered``: office, office type,
policy, ports), then checks in every ``checkin_seconds`` (jittered) with the progress of
every download, and at once when the server nudges (new assignments; at most every
``NUDGE_MIN_INTERVAL``) or a download completes (``check_in_soon``). A refusal for an
unknown device registers again; an unauthenticated refusal (anyone can forge one) is
shown and at most triggers a registration, whose answer is authenticated.

It owns no socket: it asks the ``ControlClient`` to send, and the agent hands it the
control events it is concerned with. What it learnt (``registered``) tells the other
machines where the server's data ports are, where a peer's are, and whether this
office shares content.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from shoal.client.config import AgentConfig
from shoal.client.control import (
    CertificateRejected,
    ControlClient,
    Nudged,
    RefusedUnauthenticated,
    ServerCertified,
)
from shoal.protocol.transfer import Address, Mode
from shoal.wire.control import (
    CheckIn,
    ContentProgress,
    ControlBody,
    OfficeType,
    RefusalCause,
    Refused,
    Register,
    Registered,
)

MAX_CHECKIN_ENTRIES = 16
RETRY_SOON = 5.0
NUDGE_MIN_INTERVAL = 1.0


class RegistrationMachine:
    """Registration and check-ins (see the module docstring)."""

    def __init__(
        self,
        config: AgentConfig,
        control: ControlClient,
        rng: random.Random,
        progress: Callable[[], list[ContentProgress]],
        now: float,
    ) -> None:
        self.config = config
        self.control = control
        self.rng = rng
        self._progress = progress
        self.registered: Registered | None = None
        self.kept: Registered | None = None
        """The answer an earlier process registered with (the shell read it from disk):
        taken when this process's first ``REGISTER`` goes unanswered (``kept_registration``)."""
        self.refusal: Refused | None = None
        self.note = "registering with the P2P server"
        self._standing = ""  # the last registration's note, which an answer restores
        self._silent = False  # the note says the server does not answer
        self._register_due: float | None = now
        self._register_sent_at = float("-inf")
        self._checkin_due: float | None = None
        self._nudged_at = float("-inf")

    # ------------------------------------------------------------ what it learnt

    @property
    def office(self) -> str | None:
        """The office the registration answer named (None: not registered yet)."""
        return self.registered.office if self.registered else None

    @property
    def office_type(self) -> OfficeType:
        return self.registered.office_type if self.registered else OfficeType.NONE

    @property
    def shares(self) -> bool:
        """Does this client's office share content peer to peer?"""
        return self.office_type in (OfficeType.DEFAULT, OfficeType.WIFI)

    def server_data_address(self, mode: Mode) -> Address:
        """The server's data port: the one it says it serves on (the main set)."""
        registered = self.registered
        if registered is not None:
            data, background = registered.data_port, registered.background_port
        else:
            data, background = self.config.data_port, self.config.background_port
        return self.config.server[0], background if mode is Mode.BACKGROUND else data

    def peer_address(self, ip: str, mode: Mode, discovery_port: int = 0) -> Address:
        """A peer's data address: on the console's alternative ports when its discovery
        datagrams come from the alternative discovery port, else on the main ports."""
        data, background = self.config.data_port, self.config.background_port
        registered = self.registered
        if registered is not None:
            alternative = registered.alternative_ports
            if alternative[0] and discovery_port == alternative[0]:
                data, background = alternative[2], alternative[3]
            elif discovery_port == registered.discovery_port:
                data, background = registered.data_port, registered.background_port
        return ip, background if mode is Mode.BACKGROUND else data

    # ------------------------------------------------------------------ timer

    def get_timer(self) -> float | None:
        register, checkin = self._register_due, self._checkin_due
        if register is None or (checkin is not None and checkin < register):
            return checkin
        return register

    def handle_timer(self, now: float) -> None:
        if self._register_due is not None and self._register_due <= now:
            self._register_due = None
            self._register_sent_at = now
            self.control.register(
                self.config.version, self.config.hostname, self.config.subnet_prefix, now
            )
        if self._checkin_due is not None and self._checkin_due <= now:
            self.check_in(now)

    def check_in(self, now: float) -> None:
        """Tell the server how every download goes; the next check-in is due later."""
        assert self.registered is not None
        progress = self._progress()
        for start in range(0, max(len(progress), 1), MAX_CHECKIN_ENTRIES):
            self.control.check_in(progress[start : start + MAX_CHECKIN_ENTRIES], now)
        interval = self.registered.checkin_seconds
        jitter = self.config.checkin_jitter
        self._checkin_due = now + interval * self.rng.uniform(1 - jitter, 1 + jitter)

    def check_in_soon(self, now: float) -> None:
        """Something the server (and the console) should hear at once: a completion."""
        self._checkin_due = now

    # ---------------------------------------------------------------- inputs

    def on_registered(self, reply: Registered, policy_note: str, now: float) -> None:
        self.registered, self.refusal = reply, None
        office = reply.office or "no office (server downloads only)"
        self.note = f"registered with the P2P server, office {office}" + policy_note
        ports = (reply.discovery_port, reply.data_port, reply.background_port)
        alternative = reply.alternative_ports
        installed = (
            self.config.discovery_port,
            self.config.data_port,
            self.config.background_port,
        )
        if installed not in (ports, (alternative[0], alternative[2], alternative[3])):
            self.note += (
                f"; the console sets ports {ports} (discovery, data, background), "
                f"this client runs on {installed}: restart it to apply"
            )
        self._standing, self._silent = self.note, False
        self.check_in(now)

    def on_refused(self, request: ControlBody, reply: Refused, now: float) -> bool:
        """A refusal, authenticated by the server. True: it was about this device's
        registration (handled here); False: about a content (the downloads' business)."""
        self.refusal = reply
        self.note = f"refused by the P2P server: {reply.message}"
        if reply.cause is not RefusalCause.UNKNOWN_DEVICE and not isinstance(request, Register):
            return False
        if reply.cause is RefusalCause.UNKNOWN_DEVICE:
            self.registered = None
            self._register_due = now
        else:
            self._register_due = now + self.config.register_retry_seconds
        self._checkin_due = None
        return True

    def on_unauthenticated_refusal(self, refusal: RefusedUnauthenticated, now: float) -> None:
        """Unproven (anyone can send it): say it, and at most register again, whose
        answer is authenticated; never give up a registration or trust on its word."""
        self.note = f"the P2P server (or someone) says: {refusal.message}"
        if refusal.cause is RefusalCause.AUTHENTICATION_FAILED:
            self.note += " (check this device's enrollment: `shoal client enroll`)"
        if refusal.cause is RefusalCause.UNKNOWN_DEVICE and self._register_due is None:
            # At once (a restarted server that lost our row says so to every request,
            # and serves us nothing until we register), but at most one registration
            # per RETRY_SOON however many such refusals come: a forged one costs one
            # REGISTER, whose answer is authenticated.
            self._register_due = max(now, self._register_sent_at + RETRY_SOON)

    def on_timed_out(self, request: ControlBody, now: float) -> Registered | None:
        """An unanswered request. A ``REGISTER`` is sent again within ``RETRY_SOON``;
        the first one of this process takes the kept answer of a Default office, if
        any, and returns it: the client works offline from it until the server answers."""
        self.note = f"the P2P server at {self.config.server[0]} does not answer"
        self._silent = True
        if isinstance(request, CheckIn):
            self.check_in_again_soon(now)
        if not isinstance(request, Register):
            return None
        self._register_due = now + RETRY_SOON
        kept, self.kept = self.kept, None
        # Only where the office shares without the server (broadcast discovery): a WiFi
        # office's peers come from the server's lists, a VPN office fetches from it.
        shares_alone = kept is not None and kept.office_type is OfficeType.DEFAULT
        if kept is None or self.registered is not None or not shares_alone:
            return None
        self.registered = kept
        self.note += f": working offline from the registration kept on disk (office {kept.office})"
        return kept

    def on_answered(self) -> None:
        """The server answered (authenticated, not a refusal): a note saying it does not
        answer, left by a request of its outage, no longer holds (it stayed until the
        next registration, however long the server had been back)."""
        if self._silent and self._standing:
            self.note = self._standing
        self._silent = False

    def check_in_again_soon(self, now: float) -> None:
        """Check in within ``RETRY_SOON`` (not later than already due): a check-in went
        unanswered, or the assignment document its answer named could not be fetched
        (the server went away meanwhile, refused or garbled it), which the next answer
        names again. Left to the next check-in, a device whose server restarted between
        the answer and the fetch waited a check-in period (60 s) with nothing to
        download, its office's copy next to it."""
        if self.registered is not None:
            self._checkin_due = min(self._checkin_due or now + RETRY_SOON, now + RETRY_SOON)

    def on_nudged(self, nudge: Nudged, assignments_digest: bytes | None, now: float) -> None:
        """New assignments: check in now rather than at the next check-in.

        Rate-limited, so a replayed nudge costs at most one check-in a second.
        """
        if self.registered is None or nudge.assignments_sha256 == assignments_digest:
            return
        if now - self._nudged_at < NUDGE_MIN_INTERVAL:
            return
        self._nudged_at = now
        self.check_in(now)

    def on_server_certified(self, event: ServerCertified) -> None:
        certified = event.certificate
        self.note = f"P2P server {certified.name or certified.address} certified by the console"

    def on_certificate_rejected(self, event: CertificateRejected) -> None:
        self.note = (
            f"refused a P2P server certificate: {event.reason} (is another "
            "device answering for the server? was this device enrolled with this "
            "console?)"
        )
