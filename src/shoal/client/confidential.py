"""Confidential downloads: when to ask the shell for their plaintext.

A confidential content is downloaded, verified and served like any other (it is
ciphertext), so its transfer costs what a plain one does. Its plaintext is written
only once the download is complete and the assignment document holds this device's
sealed key, and only where it is needed (``shoal.client.plaintext``):

- a version with an install specification is decrypted by the installer as it stages
  the file (the install machine's ``RunCommand`` says ``decrypt``; the shell's
  ``stage_plaintext``): nothing is decrypted before that;
- any other version gets a ``PlaintextJob``: the shell decrypts it off the event loop
  into ``DATA_DIR/packages/CONTENT_ID`` and says how it went (``plaintext_finished``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shoal.assignments import SealedContent
from shoal.client.download import Download, DownloadState
from shoal.core.ids import ContentId


@dataclass(frozen=True, slots=True)
class PlaintextJob:
    """A complete confidential download to decrypt (by the shell, off the loop)."""

    content_id: ContentId
    sealed: SealedContent


class PlaintextJobs:
    """The decryptions the shell should start."""

    def __init__(self) -> None:
        self._jobs: list[PlaintextJob] = []

    def want(self, download: Download) -> None:
        """``download`` changed (started, complete, its key arrived): decrypt it once it
        is confidential, complete and its key is here."""
        sealed = download.confidential
        if sealed is None:
            return
        if sealed.sealed_key is None:
            download.note = "confidential: waiting for this device's content key"
            return
        if download.state is not DownloadState.COMPLETE:
            return
        self._jobs.append(PlaintextJob(download.content_id, sealed))

    def take(self) -> list[PlaintextJob]:
        jobs, self._jobs = self._jobs, []
        return jobs


def plaintext_finished(
    downloads: Mapping[ContentId, Download], job: PlaintextJob, path: str | None, error: str
) -> None:
    """The shell's answer to a ``PlaintextJob``: where the plaintext is, or why not."""
    download = downloads.get(job.content_id)
    if download is None or download.confidential is None:
        return  # withdrawn meanwhile
    download.plaintext = path
    download.note = "complete: decrypted" if path else f"cannot decrypt: {error}"
