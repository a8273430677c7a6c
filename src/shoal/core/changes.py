"""The kinds of change on the console's change feed, shared by console and P2P server.

The console appends a change (``shoal.console.state.ConsoleState.record_change``) in the
same transaction as what changed; each P2P server follows the feed
(``GET /api/v1/link/changes``) and fetches again what a change names. A kind the server
does not know is logged and skipped, so a newer console can add kinds.
"""

from __future__ import annotations

from enum import StrEnum


class ChangeKind(StrEnum):
    """What a P2P server must fetch again when it reads this change."""

    CONTENT_ADDED = "content_added"
    """A new package (subject: its content ID): fetch its manifest and content."""
    CONTENT_REMOVED = "content_removed"
    """A package no version uses any more (subject: its content ID): drop it."""
    ASSIGNMENTS_CHANGED = "assignments_changed"
    """Fetch the signed assignment document again."""
    SETTINGS_CHANGED = "settings_changed"
    """Fetch the P2P settings (ports, bandwidth policy) again."""
    TOPOLOGY_CHANGED = "topology_changed"
    """Fetch the office tree again."""
    LICENCE_CHANGED = "licence_changed"
    """The licence key changed: registration answers with the new state."""

    @property
    def names_content(self) -> bool:
        """Is the subject of a change of this kind a content ID?"""
        return self in (ChangeKind.CONTENT_ADDED, ChangeKind.CONTENT_REMOVED)
