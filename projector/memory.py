"""What the process does about its own memory, which glibc would otherwise keep.

A first projection holds the whole snapshot (at 50,000 keys, 20 MiB of keys, values and the tables
that index them) and then needs little of it. Two things make that memory go back to the system:

- ``keep_large_blocks_apart`` (at start): glibc serves a large block (128 KiB or more: the table of a
  big dict) from a mapping of its own, returned when freed, but each time one is freed it raises that
  threshold to the block's size, and later large blocks come from the heap, where what is freed
  between long-lived blocks stays. A fixed threshold keeps them apart: 9 MiB less at 50,000 keys.
- ``give_back`` (after the first projection): collect garbage and trim glibc's heaps.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc

M_MMAP_THRESHOLD = -3  # <malloc.h>
LARGE_BLOCK = 128 * 1024  # glibc's own starting threshold


def keep_large_blocks_apart() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)


def give_back() -> None:
    """Return to the system what the first projection needed and no longer does."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)
