"""What a service refuses, by cause; ``shoal.console.app`` maps each to an HTTP status."""

from __future__ import annotations

from shoal.core.errors import ShoalError


class ServiceError(ShoalError):
    """A request the console refuses; ``status`` is the HTTP status it answers with."""

    status = 400
    headers: dict[str, str] | None = None


class Refused(ServiceError):
    """A well-formed request that a check refused (a wrong current password)."""


class NotFound(ServiceError):
    """The record named does not exist."""

    status = 404

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class Conflict(ServiceError):
    """The change conflicts with a record that exists."""

    status = 409


class Invalid(ServiceError):
    """A value of the request is wrong; the message names the field."""

    status = 422


class WrongCredentials(ServiceError):
    """The user name or password is wrong."""

    status = 401


class Throttled(ServiceError):
    """Too many failed logins: try again in ``retry_after`` seconds."""

    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "too many failed logins for this user name or from this address: try again in "
            f"{retry_after} second{'s' if retry_after != 1 else ''}"
        )
        self.headers = {"Retry-After": str(retry_after)}


class TooLarge(ServiceError):
    """A request body is larger than the console accepts."""

    status = 413


class UnsupportedMedia(ServiceError):
    """A request body is in a format the route does not read."""

    status = 415


class DiskFull(ServiceError):
    """The console's disk has no room for the upload."""

    status = 507
