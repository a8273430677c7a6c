"""Shapes of the console's own administration: logins, administrators, API tokens, the
licence and versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from shoal.console.schemas.common import NewPassword, Password, ShortText, Strict


class LoginRequest(Strict):
    username: ShortText
    password: Password


class AdminOut(BaseModel):
    username: str
    authenticated_by: str


class PasswordChange(Strict):
    current_password: Password
    new_password: NewPassword


class NewAdmin(Strict):
    username: ShortText
    password: NewPassword


class AdminListed(BaseModel):
    id: int
    username: str
    created_at: datetime


class TokenRequest(Strict):
    name: ShortText


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once: send it as 'Authorization: Bearer TOKEN'.")


class LicenceOut(BaseModel):
    state: str
    active: bool
    customer: str | None
    seats: int
    seats_used: int
    seats_over: int
    overage: bool
    expires: str | None
    days_left: int | None
    message: str


class LicenceSave(Strict):
    key: Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class VersionOut(BaseModel):
    id: int
    application_id: int
    application: str
    version: str
    confidential: bool
    content_id: str
    size: int
    sha256: str
    chunk_size: int
    chunks: int
    created_at: datetime
    encrypted: bool = False
    """Packed encrypted (confidential): size, sha256 and chunks describe the ciphertext."""
    plaintext_size: int | None = None
    plaintext_sha256: str | None = None
    install: dict[str, Any] | None = Field(
        default=None, description="the install specification, or null: none"
    )
