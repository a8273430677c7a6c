"""Field types shared by the console API's shapes (bounded names, IDs, ports), the page of
a list, and the strict base of every input."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Item = TypeVar("Item")
MAX_ID = 2**31 - 1
MAX_BYTES = 2**62

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)
]
ShortText = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS)
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
NewPassword = Annotated[
    str, StringConstraints(min_length=12, max_length=1000, pattern=r"^[^\x00]+$")
]
ContentIdText = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
PublicKeyText = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
ByteCount = Annotated[int, Field(ge=0, le=MAX_BYTES)]
Port = Annotated[int, Field(ge=1, le=65535)]
Kbps = Annotated[int, Field(ge=1, le=100_000_000)]
IpText = Annotated[  # an IP address as text (not shoal.core.address.Address)
    str, StringConstraints(min_length=2, max_length=64, pattern=r"^[0-9A-Fa-f.:]+$")
]
Cidr = Annotated[
    str, StringConstraints(min_length=4, max_length=64, pattern=r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$")
]


class Page(BaseModel, Generic[Item]):
    """One page of a list: ``limit`` items from ``offset``, of ``total`` that match."""

    items: list[Item]
    total: int
    limit: int
    offset: int


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """Every error answer: ``detail`` says what is wrong in one sentence."""

    detail: str
