"""Errors of the local content store, named by cause."""

from shoal.core.errors import ShoalError


class StoreError(ShoalError):
    """Base of content-store errors."""


class ContentNotFound(StoreError, KeyError):
    """The store holds no entry for this content ID."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "content not found"


class ChunkNotAvailable(StoreError):
    """The chunk is not verified in the store, so it cannot be served."""


class SidecarCorrupt(StoreError):
    """A sidecar state file that cannot be read back; ``shoal store repair`` rebuilds it."""


class StoreDiskFull(StoreError):
    """The disk has no room for the write; the store is left as it was before it."""


class CacheFull(StoreError):
    """The size cap cannot fit the content even after evicting every unpinned entry."""
