"""The P2P server's side of the console link: HTTPS + the shared authentication key.

``ConsoleLink`` is a small synchronous client (httpx) for the routes under
``/api/v1/link`` (see ``shoal.console.link_api`` for the protocol). It checks the
console's version on every answer (``X-Shoal-Version``), turns refusals into named
errors whose messages say what to do, verifies every manifest and the assignments
against the console key received at registration, and downloads content with HTTP
Range so an interrupted download resumes at the first chunk its content store lacks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shoal import __version__
from shoal.core.changes import ChangeKind
from shoal.core.errors import ChunkHashMismatch, ShoalError
from shoal.core.manifest import Manifest
from shoal.core.signing import VerifyKey, verify_manifest_file
from shoal.store.content_store import ContentStore, EntryInfo
from shoal.versions import IncompatibleVersion, Role, check_compatible

log = logging.getLogger("shoal.server")

DOWNLOAD_BLOCK = 1 << 20
REFUSALS_REMEMBERED = 10_000

LONG_POLL_MAX = 25.0
"""Longest long poll of the change feed asked for (the console accepts up to 30 s)."""


class ConsoleLinkError(ShoalError):
    """The console link failed; subclasses name the cause."""


class ConsoleUnreachable(ConsoleLinkError):
    """No HTTPS answer from the console (network, TLS, timeout)."""


class ConsoleKeyMismatch(ConsoleLinkError):
    """The console refused this server's authentication key."""


class ConsoleRefusedVersion(ConsoleLinkError):
    """The console refused this server's version (the message says what to upgrade)."""


class ConsoleRefused(ConsoleLinkError):
    """The console answered with another refusal (not activated, not in Central Office...)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class ConsoleAnswerInvalid(ConsoleLinkError):
    """The console's answer failed a check (bad signature, wrong content, bad JSON)."""


@dataclass(frozen=True, slots=True)
class Registration:
    console_version: str
    console_key: VerifyKey
    activated: bool
    licence: dict[str, Any]
    message: str
    certificate: bytes | None = None
    """This server's certificate (its X25519 key signed by the console), if asked for."""


@dataclass(frozen=True, slots=True)
class FeedChange:
    seq: int
    kind: ChangeKind | None
    """None: a kind this server does not know (from a newer console): skipped."""
    subject: str | None


@dataclass(frozen=True, slots=True)
class FeedPage:
    changes: tuple[FeedChange, ...]
    last_seq: int
    more: bool


@dataclass(frozen=True, slots=True)
class ReportedClient:
    """One entry of the server's client registry, as reported to the console."""

    device_id: str
    hostname: str
    address: str
    subnet: str
    version: str
    content: tuple[tuple[str, int, bool], ...] = ()
    """(content ID hex, bytes held verified, complete)."""
    public_key: str = ""
    """The device's X25519 public key (hex); its device ID is derived from it."""
    installs: tuple[ReportedInstall, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportedInstall:
    """A device's newest install report for one content (``INSTALL_REPORT``)."""

    content_id: str
    state: str
    """installing, installed, failed, reboot_required, uninstalling, uninstalled,
    uninstall_failed"""
    attempts: int
    exit_code: int | None
    output_tail: str


@dataclass(frozen=True, slots=True)
class DownloadTotals:
    """Running totals for one content in one office."""

    content_id: str
    office: str
    bytes_from_peers: int
    bytes_from_server: int


@dataclass(frozen=True, slots=True)
class ReportedBan:
    """A peer banned in an office now (``shoal.server.bad_peers``), as reported."""

    office: str
    peer_ip: str
    device_id: str
    """The banned device's ID (hex) when the server knows who is at that address, or ""."""
    content_id: str
    """The content whose bad chunks got it banned."""
    reporters: int
    """How many distinct devices reported it."""
    since: float
    until: float
    """Wall-clock times (Unix seconds) of the ban and of its end."""


@dataclass(frozen=True, slots=True)
class ReportedHolders:
    """Who brings a content into an office over the WAN now (``shoal.server.rendezvous``)."""

    office: str
    content_id: str
    holders: tuple[str, ...]
    """Device IDs (hex) of the live stripe holders, in stripe order."""


class ConsoleLink:
    """A P2P server's connection to its console."""

    def __init__(
        self,
        base_url: str,
        auth_key: str,
        server_id: str,
        *,
        name: str,
        address: str,
        ca_certificate: Path | None = None,
        version: str = __version__,
        timeout: float = 30.0,
        public_key: bytes | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.server_id = server_id
        self.name = name
        self.address = address
        self.version = version
        self.timeout = timeout
        self.public_key = public_key
        self.console_key: VerifyKey | None = None
        self._refusals_logged: set[str] = set()
        verify: Any = (
            ssl.create_default_context(cafile=ca_certificate)
            if ca_certificate is not None
            else True
        )
        self._http = httpx.Client(
            base_url=self.base_url + "/api/v1/link",
            verify=verify,
            timeout=timeout,
            headers={
                "X-Shoal-Server-Key": auth_key,
                "X-Shoal-Server-Id": server_id,
                "X-Shoal-Version": version,
            },
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConsoleLink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------

    def _check(self, response: httpx.Response) -> httpx.Response:
        console_version = response.headers.get("x-shoal-version")
        if console_version is not None:
            try:
                check_compatible(Role.SERVER, Role.CONSOLE, console_version, self.version)
            except IncompatibleVersion as error:
                raise ConsoleRefusedVersion(str(error)) from None
        if response.is_success:
            return response
        try:
            response.read()
            detail = str(response.json().get("detail", response.text))
        except (ValueError, AttributeError):
            detail = response.text or response.reason_phrase
        where = f"console {self.base_url}"
        if response.status_code == 401:
            raise ConsoleKeyMismatch(f"{where} refused this server's authentication key: {detail}")
        if response.status_code == 409:
            raise ConsoleRefusedVersion(f"{where} refused this server: {detail}")
        raise ConsoleRefused(f"{where} refused: {detail}", response.status_code)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ConsoleUnreachable(f"cannot reach console {self.base_url}: {error}") from None
        return self._check(response)

    def _key(self) -> VerifyKey:
        if self.console_key is None:
            raise ConsoleLinkError("register with the console first (no console key yet)")
        return self.console_key

    # --- the exchange ---------------------------------------------------------------

    def register(self) -> Registration:
        """Register this server; the answer says whether it is activated."""
        payload = {"server_id": self.server_id, "name": self.name, "address": self.address}
        if self.public_key is not None:
            payload["public_key"] = self.public_key.hex()
        answer = self._request("POST", "/register", json=payload).json()
        self.console_key = VerifyKey.from_raw(bytes.fromhex(answer["console_key"]))
        certificate = answer.get("certificate")
        return Registration(
            console_version=answer["console_version"],
            console_key=self.console_key,
            activated=answer["activated"],
            licence=answer["licence"],
            message=answer["message"],
            certificate=bytes.fromhex(certificate) if certificate else None,
        )

    def changes(self, after: int, limit: int = 1000, wait: float = 0.0) -> FeedPage:
        """The changes after ``after``; with ``wait``, the console holds an empty answer
        up to that many seconds until a change arrives (capped to what the console
        accepts, and to well within this link's timeout)."""
        params: dict[str, float] = {"after": after, "limit": limit}
        wait = min(wait, LONG_POLL_MAX, self.timeout / 2)
        if wait > 0:
            params["wait"] = wait
        answer = self._request("GET", "/changes", params=params).json()
        return FeedPage(
            changes=tuple(
                FeedChange(item["seq"], _change_kind(item["kind"]), item["subject"])
                for item in answer["changes"]
            ),
            last_seq=answer["last_seq"],
            more=answer["more"],
        )

    def fetch_manifest(self, content_id: str) -> tuple[Manifest, bytes]:
        """The manifest of ``content_id``, its console signature checked; and its bytes."""
        key = self._key()
        data = self._request("GET", f"/content/{content_id}/manifest").content
        manifest = verify_manifest_file(data, [key])
        if manifest.content_id.hex != content_id:
            raise ConsoleAnswerInvalid(
                f"console sent manifest {manifest.content_id.short} for {content_id[:12]}"
            )
        return manifest, data

    def settings(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/settings").json()
        return result

    def topology(self) -> dict[str, Any]:
        """The office tree as JSON (read it with ``shoal.topology.parse_json``)."""
        result: dict[str, Any] = self._request("GET", "/topology").json()
        return result

    def signed_assignments(self) -> dict[str, Any]:
        """The signed assignment envelope as the console sent it, its signature checked.

        The P2P server relays it unchanged to its clients, who check it again (and
        follow the console's key rotation statements it carries).
        """
        key = self._key()
        answer = self._request("GET", "/assignments").json()
        if answer["key_id"] != key.key_id.hex():
            raise ConsoleAnswerInvalid("assignments signed by another key than the console's")
        try:
            key.public_key.verify(bytes.fromhex(answer["signature"]), answer["document"].encode())
        except Exception:
            raise ConsoleAnswerInvalid("assignments signature does not match") from None
        return {
            "document": answer["document"],
            "signature": answer["signature"],
            "key_id": answer["key_id"],
            "rotations": answer.get("rotations") or [],
        }

    def assignments(self) -> dict[str, Any]:
        """The assignments document, its console signature checked."""
        document: dict[str, Any] = json.loads(self.signed_assignments()["document"])
        return document

    def download_into(self, store: ContentStore, content_id: str) -> EntryInfo:
        """Fetch ``content_id`` into a content store, resuming after its verified chunks.

        Every chunk is verified by the store before it is written; the download
        continues (with a Range request) from the first chunk the store lacks.
        """
        manifest, manifest_bytes = self.fetch_manifest(content_id)
        info = store.add(manifest_bytes, pinned=True)
        if info.complete:
            return info
        have = store.verified(manifest.content_id)
        first = next(have.missing())
        start = first * manifest.chunk_size
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            with self._http.stream(
                "GET", f"/content/{manifest.content_id.hex}", headers=headers
            ) as response:
                self._check(response)
                if start and response.status_code != 206:
                    raise ConsoleAnswerInvalid("console ignored the Range request")
                for chunk_index, chunk in _chunks(
                    response.iter_bytes(DOWNLOAD_BLOCK), manifest, first
                ):
                    if chunk_index not in have:
                        try:
                            store.write_chunk(manifest.content_id, chunk_index, chunk)
                        except ChunkHashMismatch as error:
                            raise ConsoleAnswerInvalid(
                                f"console sent a bad chunk: {error}"
                            ) from None
        except httpx.HTTPError as error:
            raise ConsoleUnreachable(
                f"download of {manifest.content_id.short} interrupted: {error}"
            ) from None
        return store.info(manifest.content_id)

    def report_clients(self, clients: Iterable[ReportedClient]) -> dict[str, Any]:
        """Send the client registry; the answer places each device and shows the licence."""
        payload = {
            "clients": [
                {
                    "device_id": client.device_id,
                    "hostname": client.hostname,
                    "address": client.address,
                    "subnet": client.subnet,
                    "version": client.version,
                    **({"public_key": client.public_key} if client.public_key else {}),
                    "content": [
                        {"content_id": content_id, "bytes_done": done, "complete": complete}
                        for content_id, done, complete in client.content
                    ],
                    **(
                        {
                            "installs": [
                                {
                                    "content_id": install.content_id,
                                    "state": install.state,
                                    "attempts": install.attempts,
                                    "exit_code": install.exit_code,
                                    "output_tail": install.output_tail,
                                }
                                for install in client.installs
                            ]
                        }
                        if client.installs
                        else {}
                    ),
                }
                for client in clients
            ]
        }
        result: dict[str, Any] = self._request("POST", "/clients", json=payload).json()
        self._log_refused("client", result)
        return result

    def _log_refused(self, what: str, answer: Any) -> None:
        """Log each record the console refused once (it is re-sent with every report).

        The console applies a report record by record and names the ones it refused; the
        others were applied, so this is a warning, not a failure.
        """
        refused = answer.get("refused") if isinstance(answer, dict) else None
        for record in refused if isinstance(refused, list) else []:
            text = json.dumps(record, sort_keys=True)[:1000]
            if text in self._refusals_logged:
                continue
            if len(self._refusals_logged) >= REFUSALS_REMEMBERED:
                self._refusals_logged.clear()
            self._refusals_logged.add(text)
            log.warning("the console refused a %s record (the others were applied): %s", what, text)

    def report_stats(self, totals: Iterable[DownloadTotals]) -> None:
        """Send running download totals per content and office (idempotent)."""
        response = self._request(
            "POST",
            "/stats",
            json={
                "entries": [
                    {
                        "content_id": entry.content_id,
                        "office": entry.office,
                        "bytes_from_peers": entry.bytes_from_peers,
                        "bytes_from_server": entry.bytes_from_server,
                    }
                    for entry in totals
                ]
            },
        )
        if response.content:  # 204 from consoles before per-record validation
            with contextlib.suppress(ValueError):
                self._log_refused("statistics", response.json())

    def report_swarm(self, bans: Iterable[ReportedBan], holders: Iterable[ReportedHolders]) -> bool:
        """Send the bans in force and the rendezvous holders now (a snapshot: it replaces
        the previous one). False when the console is older and has no such route."""
        payload = {
            "banned": [
                {
                    "office": ban.office,
                    "peer_ip": ban.peer_ip,
                    "device_id": ban.device_id or None,
                    "content_id": ban.content_id,
                    "reporters": ban.reporters,
                    "since": ban.since,
                    "until": ban.until,
                }
                for ban in bans
            ],
            "holders": [
                {"office": group.office, "content_id": group.content_id, "devices": group.holders}
                for group in holders
            ],
        }
        try:
            answer = self._request("POST", "/swarm", json=payload)
        except ConsoleRefused as error:
            if error.status_code != 404:
                raise
            return False  # a console before swarm reports: nothing to show them in
        with contextlib.suppress(ValueError):
            self._log_refused("swarm", answer.json())
        return True


def _chunks(
    blocks: Iterable[bytes], manifest: Manifest, chunk_index: int
) -> Iterator[tuple[int, bytes]]:
    """Cut a byte stream that starts at chunk ``chunk_index`` into whole chunks."""
    pending = bytearray()
    for block in blocks:
        pending += block
        while chunk_index < manifest.chunk_count:
            length = manifest.chunk_length(chunk_index)
            if len(pending) < length:
                break
            chunk = bytes(pending[:length])
            del pending[:length]
            yield chunk_index, chunk
            chunk_index += 1
    if pending:
        raise ConsoleAnswerInvalid(
            f"content {manifest.content_id.short}: {len(pending)} bytes beyond the last chunk"
        )


def _change_kind(text: str) -> ChangeKind | None:
    """The kind of a feed change; an unknown one (a newer console) is logged once."""
    try:
        return ChangeKind(text)
    except ValueError:
        if text not in _UNKNOWN_KINDS_LOGGED:
            _UNKNOWN_KINDS_LOGGED.add(text)
            log.warning(
                "the console's change feed has a kind this server does not know: %r", text[:40]
            )
        return None


_UNKNOWN_KINDS_LOGGED: set[str] = set()
