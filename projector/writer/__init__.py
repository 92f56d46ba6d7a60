"""The generation writer: the only code that writes the target directory.

Its rooms, by job: ``layout`` (the names, and what a generation is), ``recovery`` (what a restart
finds, what survives a crash), ``swap`` (``Writer.apply``, the numbered algorithm, and the swap),
``live`` (what the live generation holds, indexed so that a change costs what it touches),
``candidates`` (where the generation a change writes into comes from), ``fill`` (making a generation
hold exactly a set of files), ``links`` (the top-level links: made before a swap, removed after it,
and which are ours), ``blanks`` (empty files made ahead for the next change), ``garbage`` (replaced
generations: kept, reused, removed).
"""

from .garbage import GRACE_SECONDS, MAX_STALE
from .layout import DATA_LINK, Rejected, WriteError
from .swap import Writer

__all__ = ["DATA_LINK", "GRACE_SECONDS", "MAX_STALE", "Rejected", "WriteError", "Writer"]
