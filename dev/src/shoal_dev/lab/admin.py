"""An administrator's script client of the console's REST API (HTTPS, bearer token).

Used by ``make demo``, the lab and the end-to-end tests to do what an administrator
does in the console: log in, save a licence key, upload the topology, upload an
application, assign it, and watch devices and reports.
"""

from __future__ import annotations

import json
import ssl
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from shoal.core.errors import ShoalError
from shoal.core.signing import SigningKey
from shoal.licensing import issue_licence


class ConsoleRequestFailed(ShoalError):
    """The console refused a request; the message is its answer."""


class ConsoleAdmin:
    """A logged-in administrator session on the console."""

    def __init__(
        self,
        base_url: str,
        ca_certificate: Path,
        username: str,
        password: str,
        timeout: float = 300.0,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            verify=ssl.create_default_context(cafile=ca_certificate),
            timeout=timeout,
        )
        self._check(
            self._http.post("/auth/login", json={"username": username, "password": password})
        )
        # The session cookie makes changes only from the console's own origin.
        origin = base_url.rstrip("/")
        token = self._check(
            self._http.post("/tokens", json={"name": "shoal-lab"}, headers={"Origin": origin})
        ).json()
        self._http.cookies.clear()
        self._http.headers["Authorization"] = f"Bearer {token['token']}"

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise ConsoleRequestFailed(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text[:500]}"
            )
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self._check(self._http.get(path, params=params)).json()

    def save_licence(
        self, vendor_key: SigningKey, seats: int, expires: date, customer: str = "Lab"
    ) -> dict[str, Any]:
        """Issue a licence with ``vendor_key`` (the lab's own) and save it (activation)."""
        key = issue_licence(vendor_key, customer, seats, expires, date.today())
        result: dict[str, Any] = self._check(self._http.put("/license", json={"key": key})).json()
        return result

    def set_topology(self, offices: list[dict[str, Any]]) -> None:
        self._check(self._http.put("/topology", json={"offices": offices}))

    def put_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The P2P settings: ports, alternative ports, bandwidth policy per office."""
        result: dict[str, Any] = self._check(self._http.put("/settings/p2p", json=settings)).json()
        return result

    def server_auth_key(self) -> str:
        return str(self.get("/servers/auth-key")["key"])

    def upload(
        self,
        path: Path,
        name: str,
        version: str,
        install: dict[str, Any] | None = None,
        chunk_size: int | None = None,
    ) -> dict[str, Any]:
        """Stream a package to the console (with its install specification and chunk size,
        if any); return the new version (id, content ID...)."""
        params = {"name": name, "version": version}
        if install is not None:
            params["install"] = json.dumps(install)
        if chunk_size is not None:
            params["chunk_size"] = str(chunk_size)
        with open(path, "rb") as package:
            response = self._check(
                self._http.post(
                    "/applications",
                    params=params,
                    content=package,
                    headers={"content-type": "application/octet-stream"},
                )
            )
        version_row: dict[str, Any] = response.json()
        return version_row

    def assign(
        self,
        version_id: int,
        target_kind: str = "everyone",
        target: str | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._check(
            self._http.post(
                "/assignments",
                json={
                    "version_id": version_id,
                    "target_kind": target_kind,
                    "target": target,
                    "background": background,
                },
            )
        ).json()
        return result

    def unassign(self, version_id: int) -> None:
        """Remove every assignment of a version (clients uninstall it if its install
        specification has an uninstall command)."""
        for assignment in self.get("/assignments", limit=1000)["items"]:
            if assignment["version_id"] == version_id:
                self._check(self._http.delete(f"/assignments/{assignment['id']}"))

    def installs(self, **filters: Any) -> list[dict[str, Any]]:
        """``GET /api/v1/installs``: each assigned version on each device (filters:
        assignment, device, state, application)."""
        rows: list[dict[str, Any]] = []
        while True:  # a page at a time ({items, total, limit, offset})
            page = self.get("/installs", **filters, limit=1000, offset=len(rows))
            rows += page["items"]
            if not page["items"] or len(rows) >= page["total"]:
                return rows

    def __enter__(self) -> ConsoleAdmin:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
