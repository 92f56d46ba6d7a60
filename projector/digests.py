"""What the dispenser remembers of a value instead of the value: a digest, the same in the key table and
the writer (which compares it with what the live generation holds, and with files found at start)."""

from __future__ import annotations

import hashlib

DIGEST_BYTES = 16  # 2^-64 odds of two values alike after 2^32 changes: small enough, half SHA-256's memory


def digest(value: bytes) -> bytes:
    """What the writer and the dispenser remember of a value: never the value itself."""
    return hashlib.blake2b(value, digest_size=DIGEST_BYTES).digest()


def hasher() -> hashlib.blake2b:
    """The same digest, fed in pieces (for files read at start)."""
    return hashlib.blake2b(digest_size=DIGEST_BYTES)
