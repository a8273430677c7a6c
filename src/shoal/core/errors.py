"""Errors of the content model, named by cause.

Every error a user can meet carries a one-line message that names the problem; the
command line prints that line and exits non-zero, never a traceback.
"""


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""


class InvalidChunkSize(ShoalError, ValueError):
    """A chunk size that is not a power of two between 64 KiB and 16 MiB."""


class InvalidContentId(ShoalError, ValueError):
    """A content ID that is not 32 bytes (64 hex digits)."""


class ManifestError(ShoalError):
    """A manifest that must not be trusted. Subclasses name the cause."""


class ManifestMalformed(ManifestError):
    """The bytes are not a shoal manifest (bad magic, version or field values)."""


class ManifestTruncated(ManifestError):
    """The manifest ends before its own fields say it should."""


class ManifestUnsigned(ManifestError):
    """The manifest carries no signature, but a signed one was required."""


class ManifestTampered(ManifestError):
    """The signature does not match the manifest body: it was changed after signing."""


class UnknownSigner(ManifestError):
    """The manifest was signed by a key that is not trusted here."""


class ContentIdMismatch(ManifestError):
    """The manifest body hashes to another content ID than the one expected."""


class ChunkHashMismatch(ShoalError):
    """A chunk's bytes do not hash to the value in the manifest."""


class ContentHashMismatch(ShoalError):
    """Every chunk verified, but the whole file does not hash to the manifest's SHA-256."""


class KeyFileError(ShoalError):
    """A key file that is missing, unreadable, or not an Ed25519 key."""
