"""Issue 13, row 3: confidential packages leak to no one.

"A host with no key, in no office, asks a peer for chunks of a confidential package by
content ID: it got every chunk, in plaintext; a key-holding device not assigned it got
the whole package from the server."

A real console (API and link API, SQLite) encrypts the upload and signs the document;
a simulated office of real agents and a real P2P server core moves the ciphertext.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import stat
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from shoal import __version__, ports
from shoal.assignments import (
    SealedContent,
    assignments_for,
    encode_envelope,
    read_envelope,
    sign_assignments,
    verify_document,
)
from shoal.client.agent import DownloadState
from shoal.client.install import Purpose
from shoal.client.installer import run_command
from shoal.client.plaintext import PlaintextCancelled, plaintext_stager, write_plaintext
from shoal.console import db
from shoal.console.app import create_app
from shoal.console.state import ADMIN_PASSWORD_VARIABLE, ConsoleConfig, ConsoleState, open_console
from shoal.core.identity import DeviceKey
from shoal.core.ids import ContentId
from shoal.core.manifest import decode_manifest_file
from shoal.core.packing import pack_sealed_stream
from shoal.core.sealing import (
    TAG_SIZE,
    ChunkCipher,
    ChunkDecryptionFailed,
    ConfidentialError,
    ContentKeyUnsealFailed,
    new_content_key,
    open_content_key,
    seal_content_key,
)
from shoal.core.signing import SigningKey, VerifyKey
from shoal.licensing import issue_licence
from shoal.protocol.transfer import ChunkReceived, ChunkRefused, Mode, TransferEngine
from shoal.server.core import ServerCore, ServerSettings
from shoal.topology import parse_json
from shoal.wire.control import ControlMessage, Lease, LeaseDecision, LeaseReply, Register
from shoal_dev.sim.enterprise import SimOffice, build_enterprise

PASSWORD = "a long test password"
CHUNK = 65536
SERVER_ID = "srv-1"
TOPOLOGY_CSV = (
    "office,parent,type,subnets\n"
    "Central Office,,Default,10.0.0.0/24\n"
    "Branch,Central Office,Default,10.1.0.0/24\n"
    "Remote,Central Office,VPN,10.3.0.0/24\n"
)


@dataclass
class Console:
    state: ConsoleState
    client: TestClient
    headers: dict[str, str]

    def upload(
        self,
        name: str,
        version: str,
        data: bytes,
        confidential: bool,
        install: dict[str, Any] | None = None,
    ) -> Any:
        answer = self.client.post(
            "/api/v1/applications",
            params={
                "name": name,
                "version": version,
                "confidential": str(confidential).lower(),
                "chunk_size": CHUNK,
                **({"install": json.dumps(install)} if install else {}),
            },
            content=data,
            headers={**self.headers, "content-type": "application/octet-stream"},
        )
        assert answer.status_code == 201, answer.text
        return answer.json()

    def assign(self, version_id: int, target_kind: str, target: str | None = None) -> None:
        answer = self.client.post(
            "/api/v1/assignments",
            json={"version_id": version_id, "target_kind": target_kind, "target": target},
            headers=self.headers,
        )
        assert answer.status_code == 201, answer.text

    def link(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {
            "X-Shoal-Server-Key": self.state.server_key,
            "X-Shoal-Server-Id": SERVER_ID,
            "X-Shoal-Version": __version__,
        }
        answer = self.client.request(method, f"/api/v1/link/{path}", headers=headers, **kwargs)
        assert answer.status_code in (200, 204), answer.text
        return answer

    def envelope(self) -> bytes:
        """The signed assignment document, as a P2P server fetches and relays it."""
        return encode_envelope(self.link("GET", "assignments").json())

    def content(self, content_id: str) -> tuple[bytes, bytes]:
        """The signed manifest and the bytes a P2P server fetches."""
        manifest = self.link("GET", f"content/{content_id}/manifest").content
        return manifest, self.link("GET", f"content/{content_id}").content

    def add_device(
        self, key: DeviceKey | None, address: str, *, public_key: bool = True, name: str = ""
    ) -> str:
        """A device as its server reported it (with its public key, as the server does)."""
        device_id = key.device_id.hex() if key else name
        with self.state.sessions() as session:
            now = datetime.now(UTC)
            session.add(
                db.Device(
                    id=device_id,
                    hostname=f"pc-{address}",
                    address=address,
                    subnet=address.rsplit(".", 1)[0] + ".0/24",
                    office="Branch" if address.startswith("10.1.") else "Central Office",
                    version=__version__,
                    server_id=SERVER_ID,
                    licensed=True,
                    first_seen=now,
                    last_seen=now,
                    public_key=key.public_raw.hex() if key and public_key else None,
                )
            )
            session.commit()
        return device_id

    def changes(self) -> list[str]:
        return [change["kind"] for change in self.link("GET", "changes").json()["changes"]]


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Console:
    monkeypatch.setenv(ADMIN_PASSWORD_VARIABLE, PASSWORD)
    vendor = SigningKey.generate()
    vendor.verify_key.save(tmp_path / "vendor.pub")
    state = open_console(
        ConsoleConfig(
            data_dir=tmp_path / "console", tls=False, vendor_public_key=tmp_path / "vendor.pub"
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(create_app(state), base_url="https://testserver")
    login = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200, login.text
    same_origin = {"Origin": "https://testserver"}
    token = client.post("/api/v1/tokens", json={"name": "tests"}, headers=same_origin).json()[
        "token"
    ]
    client.cookies.clear()
    headers = {"Authorization": f"Bearer {token}"}
    today = date.today()
    licence = issue_licence(vendor, "Acme", 100, today.replace(year=today.year + 1), today)
    assert client.put("/api/v1/license", json={"key": licence}, headers=headers).status_code == 200
    topology = client.put(
        "/api/v1/topology", content=TOPOLOGY_CSV, headers={**headers, "content-type": "text/csv"}
    )
    assert topology.status_code == 200, topology.text
    with state.sessions() as session:
        now = datetime.now(UTC)
        session.add(
            db.Server(
                id=SERVER_ID,
                name="central",
                address="10.0.0.2",
                version=__version__,
                registered_at=now,
                last_seen=now,
                activated_at=now,
            )
        )
        session.commit()
    return Console(state, client, headers)


def package_bytes(size: int, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(size)


def holds_plaintext(data: bytes, plaintext: bytes, window: int = 64) -> bool:
    """Does ``data`` contain any ``window``-byte piece of ``plaintext`` (random bytes)?"""
    pieces = {plaintext[offset : offset + window] for offset in range(0, len(plaintext), window)}
    return any(data[offset : offset + window] in pieces for offset in range(len(data) - window + 1))


def sealed_for(envelope: bytes, console_key: VerifyKey, device: DeviceKey) -> SealedContent | None:
    """What a device reads for itself in the document (None: not assigned)."""
    document = verify_document(read_envelope(envelope), console_key)
    mine = assignments_for(document, device.device_id.hex(), "Branch")
    found = [assignment.confidential for assignment in mine if assignment.confidential]
    return found[-1] if found else None


# --------------------------------------------------------------- the attacks of row 3


def test_attack_3_an_outsider_gets_only_ciphertext_and_the_assigned_client_the_plaintext(
    console: Console, tmp_path: Path
) -> None:
    """End to end: upload confidential -> assign one device -> it gets the plaintext;
    a host with no key, in no office, asking that peer by content ID gets ciphertext."""
    plaintext = package_bytes(5 * CHUNK + 1234)
    assigned, neighbour = DeviceKey.generate(), DeviceKey.generate()
    version = console.upload("Payroll", "1.0", plaintext, confidential=True)
    assert version["encrypted"] and version["plaintext_size"] == len(plaintext)
    assert version["plaintext_sha256"] == hashlib.sha256(plaintext).hexdigest()
    assigned_id = console.add_device(assigned, "10.1.0.1")
    console.add_device(neighbour, "10.1.0.2")
    console.assign(version["id"], "device", assigned_id)

    manifest_file, served = console.content(version["content_id"])
    manifest = decode_manifest_file(manifest_file).manifest
    # The manifest describes the ciphertext: 16 bytes of tag per chunk, power-of-two chunks.
    assert manifest.chunk_size == CHUNK and manifest.size == len(plaintext) + 6 * TAG_SIZE
    assert hashlib.sha256(served).digest() == manifest.sha256
    assert not holds_plaintext(served, plaintext), "the console serves the plaintext"

    enterprise = build_enterprise(
        tmp_path / "sim",
        [SimOffice("Branch", "10.1.0.0/24", 2), SimOffice("Nowhere", "10.7.0.0/24", 0)],
        console_key=console.state.signing_key,
        content=(manifest_file, served),
        assignments=console.envelope(),
        device_keys=(assigned, neighbour),
    )
    client, other = enterprise.clients
    enterprise.run(until=60, stop=lambda: enterprise.complete(client))
    assert enterprise.complete(client)
    assert other.agent.downloads == {}  # not assigned: it fetches nothing
    cached = client.store.data_path(manifest.content_id).read_bytes()  # type: ignore[attr-defined]
    assert cached == served and not holds_plaintext(cached, plaintext)

    # The outsider: a host in no office, no key, asks the assigned peer for every chunk.
    network = enterprise.network
    outsider = network.add_host(network.offices["Nowhere"], "10.7.0.9")
    engine = TransferEngine(now=network.now)
    network.bind(outsider, ports.FOREGROUND_DATA, engine)
    for chunk_index in range(manifest.chunk_count):
        engine.request_chunk(
            (client.host.ip, ports.FOREGROUND_DATA),
            manifest.content_id,
            chunk_index,
            manifest.chunk_length(chunk_index),
            manifest.chunk_hashes[chunk_index],
            Mode.FOREGROUND,
            network.now,
        )
    network.pump(outsider)
    network.run(until=network.now + 10)
    received = b""
    answered = 0
    while (event := engine.next_event()) is not None:
        if isinstance(event, ChunkReceived):
            received += event.data
            answered += 1
        elif isinstance(event, ChunkRefused):
            answered += 1
    assert answered == manifest.chunk_count, "the peer neither served nor refused"
    assert not holds_plaintext(received, plaintext), "a peer handed out plaintext"

    # The shell's step: the assigned client opens its key and writes the plaintext.
    job = client.agent.take_plaintext_jobs()
    assert [j.content_id for j in job] == [manifest.content_id]
    path = write_plaintext(
        client.store, manifest.content_id, job[0].sealed, assigned, tmp_path / "packages"
    )
    assert path.read_bytes() == plaintext
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    client.agent.plaintext_finished(job[0], str(path))
    status = client.agent.status(network.now)["downloads"][0]
    assert status["confidential"] and status["plaintext"] == str(path)
    assert client.agent.downloads[manifest.content_id].state is DownloadState.COMPLETE

    # The neighbour holds a key, but none sealed to it: with the same ciphertext and the
    # assigned device's sealed key it still gets 0 plaintext bytes.
    assert sealed_for(console.envelope(), console.state.signing_key.verify_key, neighbour) is None
    with pytest.raises(ContentKeyUnsealFailed):
        write_plaintext(client.store, manifest.content_id, job[0].sealed, neighbour, tmp_path / "n")
    assert not (tmp_path / "n" / manifest.content_id.hex).exists()


def test_a_confidential_install_decrypts_only_as_it_stages_and_keeps_no_plaintext(
    console: Console, tmp_path: Path
) -> None:
    """With an install specification, nothing is decrypted while or after the download:
    the installer's staging is the decryption, the command sees the plaintext, and the
    staged plaintext is gone once the install ran (the cache keeps ciphertext only).
    A device whose key does not open it, or a command staged without its key, runs
    nothing."""
    plaintext = package_bytes(4 * CHUNK + 77)
    installed = tmp_path / "installed.bin"
    assigned, neighbour = DeviceKey.generate(), DeviceKey.generate()
    version = console.upload(
        "Payroll",
        "2.0",
        plaintext,
        confidential=True,
        install={"command": f"cp {{file}} {installed}", "extension": ".bin"},
    )
    console.assign(version["id"], "device", console.add_device(assigned, "10.1.0.1"))
    manifest_file, served = console.content(version["content_id"])
    content_id = ContentId.from_hex(version["content_id"])
    enterprise = build_enterprise(
        tmp_path / "sim",
        [SimOffice("Branch", "10.1.0.0/24", 1)],
        console_key=console.state.signing_key,
        content=(manifest_file, served),
        assignments=console.envelope(),
        device_keys=(assigned,),
    )
    (client,) = enterprise.clients
    client.agent.installs.staging_dir = str(tmp_path / "staging")  # as DATA_DIR/staging
    enterprise.run(until=60, stop=lambda: enterprise.complete(client))
    assert enterprise.complete(client)
    assert client.agent.take_plaintext_jobs() == []  # the installer decrypts it
    (command,) = client.agent.installs.take_commands()
    assert command.purpose is Purpose.INSTALL and command.decrypt
    assert command.stage_from is None  # from the cache, which holds ciphertext only

    store = client.store
    staged = Path(command.staged)

    def data_path() -> Path:
        return store.data_path(content_id)  # type: ignore[attr-defined, no-any-return]

    assert not holds_plaintext(data_path().read_bytes(), plaintext)
    # No key (the document not read yet after a restart): fails before anything runs.
    refused = run_command(command, data_path, None)
    assert refused.exit_code is None and "content key" in refused.error
    assert not installed.exists() and not staged.exists()
    # Another device's key: the sealed key does not open, nothing staged, nothing run.
    wrong = plaintext_stager(
        store, neighbour, lambda _: client.agent.downloads[content_id].confidential
    )(content_id)
    failed = run_command(command, data_path, wrong)
    assert failed.exit_code is None and "cannot stage" in failed.error
    assert not installed.exists() and not staged.exists()
    assert list(staged.parent.iterdir()) == []  # no temporary file left either

    stager = plaintext_stager(
        store, assigned, lambda _: client.agent.downloads[content_id].confidential
    )
    finished = run_command(command, data_path, stager(content_id))
    assert finished.exit_code == 0, finished.output_tail
    assert installed.read_bytes() == plaintext
    assert not staged.exists(), "the staged plaintext outlived the install"
    assert stat.S_IMODE(staged.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "packages").exists()
    client.agent.installs.command_finished(finished, enterprise.network.now)
    assert client.agent.status(enterprise.network.now)["downloads"][0]["plaintext"] is None


def test_attack_3_the_server_serves_no_device_it_is_not_assigned_to() -> None:
    """A registered device (VPN office: served directly) that holds a key but is not
    assigned the content gets no chunk from the server; the assigned one does."""
    console_key = SigningKey.generate()
    cipher = ChunkCipher(new_content_key(), CHUNK, 3 * CHUNK)
    sink = io.BytesIO()
    sealed = pack_sealed_stream(io.BytesIO(package_bytes(3 * CHUNK)), sink, cipher)
    content_id = sealed.manifest.content_id
    core = ServerCore(ServerSettings(enrollment_token=b"token", identity=DeviceKey.generate()))
    core.topology = parse_json(
        {
            "offices": [
                {"office": "Central Office", "parent": None, "type": "Default",
                 "subnets": ["10.0.0.0/24"]},
                {"office": "Remote", "parent": "Central Office", "type": "VPN",
                 "subnets": ["10.3.0.0/24"]},
            ]
        }
    )  # fmt: skip
    core.licence.active = True
    core.add_manifest(console_key.sign(sealed.manifest).encode())
    assigned, other = DeviceKey.generate(), DeviceKey.generate()
    for number, key in enumerate((assigned, other), start=1):
        register = Register(key.public_raw, __version__, f"pc-{number}", 24)
        message = ControlMessage(1, key.device_id, register)
        core.handle_control(message, (f"10.3.0.{number}", 5000), 0)
    document = {
        "assignments": [
            {"id": 1, "content_id": content_id.hex, "target_kind": "device",
             "target": assigned.device_id.hex(), "offices": None, "background": False}
        ]
    }  # fmt: skip
    core.set_assignments(encode_envelope(sign_assignments(console_key, document)))
    lease = core.handle_control(
        ControlMessage(1, assigned.device_id, Lease(content_id)), ("10.3.0.1", 5000), 0
    )
    assert isinstance(lease, LeaseReply) and lease.decision is LeaseDecision.DIRECT
    assert core.may_serve_content("10.3.0.1", content_id, 0)
    assert not core.may_serve_content("10.3.0.2", content_id, 0)
    core.set_assignments(b"not a document")  # nothing readable: nobody is served
    assert not core.may_serve_content("10.3.0.1", content_id, 0)


def test_attack_3_unauthorised_and_retired_devices_get_no_key(console: Console) -> None:
    """Only licensed, targeted devices with a key get a sealed key; a device retired
    before a new version gets none for it, so 0 plaintext bytes of it."""
    everyone = DeviceKey.generate()
    retired = DeviceKey.generate()
    keyless = DeviceKey.generate()
    console.add_device(everyone, "10.1.0.1")
    retired_id = console.add_device(retired, "10.1.0.2")
    console.add_device(keyless, "10.1.0.3", public_key=False)
    first = console.upload("Payroll", "1.0", package_bytes(CHUNK), confidential=True)
    console.assign(first["id"], "everyone")
    verify = console.state.signing_key.verify_key
    envelope = console.envelope()
    assert sealed_for(envelope, verify, retired) is not None
    gone = console.client.delete(f"/api/v1/devices/{retired_id}", headers=console.headers)
    assert gone.status_code == 204
    # The retired (stolen) device keeps running: its server reports it again, key and all.
    console.add_device(retired, "10.1.0.2")
    # A later upload of a confidential application is confidential too.
    second = console.upload("Payroll", "2.0", package_bytes(CHUNK, seed=9), confidential=False)
    assert second["encrypted"]
    console.assign(second["id"], "everyone")
    document = json.loads(json.loads(console.envelope())["document"])
    entry = next(e for e in document["assignments"] if e["content_id"] == second["content_id"])
    assert set(entry["confidential"]["sealed_keys"]) == {everyone.device_id.hex()}
    content_id = bytes.fromhex(second["content_id"])
    for sealed_hex in entry["confidential"]["sealed_keys"].values():
        for outsider in (retired, keyless):
            with pytest.raises(ContentKeyUnsealFailed):
                open_content_key(bytes.fromhex(sealed_hex), outsider, content_id)
    mine = sealed_for(console.envelope(), verify, everyone)
    assert mine is not None and mine.sealed_key is not None
    assert len(open_content_key(mine.sealed_key, everyone, content_id)) == 32
    keyless_view = sealed_for(console.envelope(), verify, keyless)
    assert keyless_view is not None and keyless_view.sealed_key is None


def test_attack_3_a_device_that_becomes_a_recipient_gets_its_key_at_the_next_signing(
    console: Console,
) -> None:
    """A report that makes a device a recipient (here: it moved into the assigned office)
    records ``assignments_changed``, so the servers fetch a newly signed document."""
    mover = DeviceKey.generate()
    device_id = console.add_device(mover, "10.0.0.7")  # Central Office
    version = console.upload("Payroll", "1.0", package_bytes(CHUNK), confidential=True)
    console.assign(version["id"], "office", "Branch")
    before = console.link("GET", "changes").json()["last_seq"]
    document = json.loads(json.loads(console.envelope())["document"])
    assert document["assignments"][0]["confidential"]["sealed_keys"] == {}
    report = {
        "clients": [
            {
                "device_id": device_id,
                "hostname": "pc-mover",
                "address": "10.1.0.7",
                "subnet": "10.1.0.0/24",
                "version": __version__,
                "content": [],
            }
        ]
    }
    console.link("POST", "clients", json=report)
    after = console.link("GET", f"changes?after={before}").json()["changes"]
    assert "assignments_changed" in [change["kind"] for change in after]
    document = json.loads(json.loads(console.envelope())["document"])
    assert list(document["assignments"][0]["confidential"]["sealed_keys"]) == [device_id]
    # A second identical report changes nothing: no needless re-signing.
    last = console.link("GET", "changes").json()["last_seq"]
    console.link("POST", "clients", json=report)
    assert console.link("GET", f"changes?after={last}").json()["changes"] == []
    # Fetching it again is the same document: sealing draws fresh randomness, but the
    # console signs anew only when what the document says changed.
    assert console.envelope() == console.envelope()
    assert console.link("GET", f"changes?after={last}").json()["changes"] == []


# ------------------------------------------------------------------ the primitives


def test_chunks_are_bound_to_their_index_size_and_key() -> None:
    key = new_content_key()
    plaintext = package_bytes(2 * (CHUNK - TAG_SIZE) + 10)
    cipher = ChunkCipher(key, CHUNK, len(plaintext))
    step = cipher.plaintext_chunk_size
    chunks = [cipher.encrypt(i, plaintext[i * step : (i + 1) * step]) for i in range(3)]
    assert [len(chunk) for chunk in chunks] == [CHUNK, CHUNK, 10 + TAG_SIZE]
    assert b"".join(cipher.decrypt(i, chunk) for i, chunk in enumerate(chunks)) == plaintext
    with pytest.raises(ChunkDecryptionFailed):
        cipher.decrypt(1, chunks[0])  # moved to another index
    with pytest.raises(ChunkDecryptionFailed):
        ChunkCipher(key, CHUNK, 2 * step).decrypt(0, chunks[0])  # truncated package
    with pytest.raises(ChunkDecryptionFailed):
        ChunkCipher(new_content_key(), CHUNK, len(plaintext)).decrypt(0, chunks[0])
    flipped = bytearray(chunks[2])
    flipped[0] ^= 1
    with pytest.raises(ChunkDecryptionFailed):
        cipher.decrypt(2, bytes(flipped))
    # Same plaintext, new version: a new key, so no (key, IV) pair is ever reused.
    again = ChunkCipher(new_content_key(), CHUNK, len(plaintext))
    assert again.encrypt(0, plaintext[:step]) != chunks[0]


def test_a_sealed_key_opens_only_for_its_device_and_content() -> None:
    device, other = DeviceKey.generate(), DeviceKey.generate()
    key, content = new_content_key(), os.urandom(32)
    sealed = seal_content_key(key, device.public_raw, content)
    assert sealed != seal_content_key(key, device.public_raw, content)  # fresh ephemeral
    assert open_content_key(sealed, device, content) == key
    with pytest.raises(ContentKeyUnsealFailed):
        open_content_key(sealed, other, content)
    with pytest.raises(ContentKeyUnsealFailed):
        open_content_key(sealed, device, os.urandom(32))


def test_sealed_packing_streams_and_describes_the_ciphertext() -> None:
    plaintext = package_bytes(3 * CHUNK)
    cipher = ChunkCipher(new_content_key(), CHUNK, len(plaintext))
    sink = io.BytesIO()
    sealed = pack_sealed_stream(io.BytesIO(plaintext), sink, cipher)
    ciphertext = sink.getvalue()
    assert sealed.plaintext_sha256 == hashlib.sha256(plaintext).digest()
    assert sealed.manifest.size == len(ciphertext) == cipher.sealed_size
    assert sealed.manifest.sha256 == hashlib.sha256(ciphertext).digest()
    for index in range(sealed.manifest.chunk_count):
        sealed.manifest.verify_chunk(index, ciphertext[index * CHUNK : (index + 1) * CHUNK])
    with pytest.raises(ValueError):
        pack_sealed_stream(io.BytesIO(plaintext[:-1]), io.BytesIO(), cipher)


def test_a_wrong_plaintext_never_lands_under_its_name(tmp_path: Path) -> None:
    device = DeviceKey.generate()
    plaintext = package_bytes(2 * CHUNK)
    cipher = ChunkCipher(new_content_key(), CHUNK, len(plaintext))
    sink = io.BytesIO()
    sealed = pack_sealed_stream(io.BytesIO(plaintext), sink, cipher)
    ciphertext = sink.getvalue()
    manifest = sealed.manifest
    cache_file = tmp_path / "cache.data"
    cache_file.write_bytes(ciphertext)
    tmp_path = tmp_path / "packages"

    class Store:
        def manifest(self, content_id: ContentId) -> Any:
            return manifest

        def data_path(self, content_id: ContentId) -> Path:
            return cache_file

        def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
            return ciphertext[chunk_index * CHUNK : (chunk_index + 1) * CHUNK]

    sealed_key = seal_content_key(cipher.key, device.public_raw, manifest.content_id.digest)
    right = SealedContent(len(plaintext), sealed.plaintext_sha256, sealed_key)
    # A chunk altered in the cache: its GCM tag fails, and nothing lands.
    tampered = bytearray(ciphertext)
    tampered[CHUNK + 7] ^= 0x01
    cache_file.write_bytes(tampered)
    with pytest.raises(ChunkDecryptionFailed):
        write_plaintext(Store(), manifest.content_id, right, device, tmp_path)
    assert list(tmp_path.iterdir()) == []
    cache_file.write_bytes(ciphertext)
    # The key sealed to another device, or another content's key: nothing lands.
    other_device = DeviceKey.generate()
    with pytest.raises(ContentKeyUnsealFailed):
        write_plaintext(Store(), manifest.content_id, right, other_device, tmp_path)
    other_key = seal_content_key(new_content_key(), device.public_raw, manifest.content_id.digest)
    other = SealedContent(len(plaintext), sealed.plaintext_sha256, other_key)
    with pytest.raises(ChunkDecryptionFailed):
        write_plaintext(Store(), manifest.content_id, other, device, tmp_path)
    assert list(tmp_path.iterdir()) == []
    # A size the ciphertext cannot hold, or no key at all.
    with pytest.raises(ConfidentialError):
        write_plaintext(
            Store(), manifest.content_id, SealedContent(1, b"x" * 32, sealed_key), device, tmp_path
        )
    with pytest.raises(ConfidentialError):
        write_plaintext(
            Store(), manifest.content_id, SealedContent(1, b"x" * 32, None), device, tmp_path
        )
    assert list(tmp_path.iterdir()) == []
    path = write_plaintext(Store(), manifest.content_id, right, device, tmp_path)
    assert path.read_bytes() == plaintext
    assert write_plaintext(Store(), manifest.content_id, right, device, tmp_path) == path


def test_the_document_carries_no_key_for_plaintext_content(console: Console) -> None:
    device = DeviceKey.generate()
    console.add_device(device, "10.1.0.1")
    version = console.upload("Editor", "1.0", package_bytes(CHUNK), confidential=False)
    assert not version["encrypted"] and version["size"] == CHUNK
    console.assign(version["id"], "everyone")
    entry = json.loads(json.loads(console.envelope())["document"])["assignments"][0]
    assert "confidential" not in entry
    with console.state.sessions() as session:
        row = session.scalar(select(db.ApplicationVersion))
        assert row is not None and row.content_key is None


class _CacheFile:
    """A client cache holding one confidential content's ciphertext in one file."""

    def __init__(self, path: Path, ciphertext: bytes, manifest: Any) -> None:
        path.write_bytes(ciphertext)
        self.path, self.ciphertext, self.chunk_size = path, ciphertext, manifest.chunk_size
        self._manifest = manifest

    def manifest(self, content_id: ContentId) -> Any:
        return self._manifest

    def data_path(self, content_id: ContentId) -> Path:
        return self.path

    def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
        start = chunk_index * self.chunk_size
        return self.ciphertext[start : start + self.chunk_size]


def _direct_io_works(directory: Path) -> bool:
    try:
        descriptor = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except (OSError, AttributeError):
        return False
    os.close(descriptor)
    (directory / "probe").unlink()
    return True


@pytest.mark.parametrize("refused", ["", "open", "write"])
@pytest.mark.parametrize(
    ("chunk_size", "plaintext_size"),
    [
        (CHUNK, 1),
        (CHUNK, 4096),
        (CHUNK, 3 * (CHUNK - TAG_SIZE) + 17),
        (CHUNK, 40 * (CHUNK - TAG_SIZE)),  # past a MiB staged: several writes
        (1 << 20, 2 * ((1 << 20) - TAG_SIZE) + 3 * 4096 + 5),
    ],
)
def test_the_plaintext_is_written_whole_with_or_without_direct_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int, plaintext_size: int,
    refused: str,
) -> None:  # fmt: skip
    """The plaintext is written from an aligned buffer with O_DIRECT, in 4 KiB blocks
    (the last one padded, then the file truncated); where the file system refuses
    O_DIRECT, at open or at a write, it is written through the page cache. Either way
    the file is exactly the plaintext."""
    import fcntl

    from shoal.client import plaintext as module

    device = DeviceKey.generate()
    plaintext = package_bytes(plaintext_size, seed=plaintext_size)
    cipher = ChunkCipher(new_content_key(), chunk_size, plaintext_size)
    sink = io.BytesIO()
    sealed = pack_sealed_stream(io.BytesIO(plaintext), sink, cipher)
    store = _CacheFile(tmp_path / "cache.data", sink.getvalue(), sealed.manifest)
    content_id = sealed.manifest.content_id
    sealed_key = seal_content_key(cipher.key, device.public_raw, content_id.digest)
    content = SealedContent(plaintext_size, sealed.plaintext_sha256, sealed_key)
    real_open, real_pwrite = os.open, os.pwrite
    direct_writes: list[int] = []

    def open_(path: Any, flags: int, mode: int = 0o777) -> int:
        if refused == "open" and flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT refused")
        return real_open(path, flags, mode)

    def pwrite(descriptor: int, data: Any, offset: int) -> int:
        if fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_DIRECT:
            if refused == "write":
                raise OSError(errno.EINVAL, "O_DIRECT refused")
            assert offset % 4096 == 0 and len(data) % 4096 == 0
            direct_writes.append(len(data))
        return real_pwrite(descriptor, data, offset)

    monkeypatch.setattr(module.os, "open", open_)
    monkeypatch.setattr(module.os, "pwrite", pwrite)
    path = write_plaintext(store, content_id, content, device, tmp_path / "packages")
    assert path.read_bytes() == plaintext
    assert [entry.name for entry in path.parent.iterdir()] == [content_id.hex]
    if not refused and _direct_io_works(tmp_path):
        assert sum(direct_writes) == -(-plaintext_size // 4096) * 4096
    else:
        assert direct_writes == []


def test_decryption_takes_only_the_chunks_ready_in_a_row(tmp_path: Path) -> None:
    """Chunks arrive out of order: each read covers only chunks already in the cache,
    in a row from the next one to decrypt, and never one that has not arrived."""
    device = DeviceKey.generate()
    plaintext = package_bytes(12 * (CHUNK - TAG_SIZE) + 99)
    cipher = ChunkCipher(new_content_key(), CHUNK, len(plaintext))
    sink = io.BytesIO()
    sealed = pack_sealed_stream(io.BytesIO(plaintext), sink, cipher)
    content_id = sealed.manifest.content_id
    ciphertext = sink.getvalue()
    cache_file = tmp_path / "cache.data"
    cache_file.write_bytes(bytes(len(ciphertext)))  # preallocated, as the cache does
    store = _CacheFile(cache_file, bytes(len(ciphertext)), sealed.manifest)
    sealed_key = seal_content_key(cipher.key, device.public_raw, content_id.digest)
    content = SealedContent(len(plaintext), sealed.plaintext_sha256, sealed_key)
    order = iter([3, 1, 0, 2, 7, 5, 4, 6, 12, 8, 9, 11, 10])
    arrived: set[int] = set()

    def wait_for_chunk(chunk_index: int, timeout: float) -> bool:
        if chunk_index not in arrived and timeout > 0:  # one more arrives, written
            index = next(order)
            with open(cache_file, "r+b") as data:
                data.seek(index * CHUNK)
                data.write(ciphertext[index * CHUNK : (index + 1) * CHUNK])
            arrived.add(index)
        return chunk_index in arrived

    path = write_plaintext(
        store, content_id, content, device, tmp_path / "out", wait_for_chunk=wait_for_chunk
    )
    assert path.read_bytes() == plaintext


def test_decryption_follows_the_chunks_as_they_arrive_and_stops_when_told(
    tmp_path: Path,
) -> None:
    device = DeviceKey.generate()
    plaintext = package_bytes(4 * CHUNK)
    cipher = ChunkCipher(new_content_key(), CHUNK, len(plaintext))
    sink = io.BytesIO()
    sealed = pack_sealed_stream(io.BytesIO(plaintext), sink, cipher)
    manifest = sealed.manifest
    cache_file = tmp_path / "cache.data"
    cache_file.write_bytes(sink.getvalue())
    sealed_key = seal_content_key(cipher.key, device.public_raw, manifest.content_id.digest)
    content = SealedContent(len(plaintext), sealed.plaintext_sha256, sealed_key)

    class Store:
        def manifest(self, content_id: ContentId) -> Any:
            return manifest

        def data_path(self, content_id: ContentId) -> Path:
            return cache_file

        def read_chunk(self, content_id: ContentId, chunk_index: int) -> bytes:
            raise AssertionError("only for chunks that fail")

    arrived: set[int] = set()
    asked: list[int] = []

    def chunk_ready(chunk_index: int) -> bool:
        asked.append(chunk_index)
        if len(asked) % 3 == 0:  # one more chunk "arrives" every third look
            arrived.add(len(arrived))
        return chunk_index in arrived

    path = write_plaintext(
        Store(), manifest.content_id, content, device, tmp_path / "out", chunk_ready=chunk_ready
    )
    assert path.read_bytes() == plaintext and sorted(set(asked)) == list(
        range(manifest.chunk_count)
    )
    with pytest.raises(PlaintextCancelled):
        write_plaintext(
            Store(),
            manifest.content_id,
            content,
            device,
            tmp_path / "stopped",
            chunk_ready=lambda index: index < 2,
            stopped=lambda: True,
        )
    assert list((tmp_path / "stopped").iterdir()) == []


def test_client_status_shows_where_the_plaintext_is() -> None:
    from shoal.client.service import render_status

    download = {
        "content_id": "ab" * 32, "state": "complete", "chunks": 2, "chunks_done": 2,
        "bytes_from_peers": 0, "bytes_from_server": 10, "peers_used": [],
        "note": "complete: decrypted", "confidential": True,
        "plaintext": "/var/lib/shoal/packages/" + "ab" * 32,
    }  # fmt: skip
    status = {
        "version": __version__, "device_id": "00" * 16, "wall_time": 0, "stopped": True,
        "office": "Branch", "office_type": "DEFAULT", "server": "10.0.0.2:41441",
        "note": "", "downloads": [download],
    }  # fmt: skip
    text = render_status(status)
    assert f"plaintext (confidential): /var/lib/shoal/packages/{'ab' * 32}" in text
