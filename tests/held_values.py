"""The real dispenser (projector.cli.main) in this process, able to say which values it holds.

Usage: held_values.py REPORT -- DISPENSER-ARGS... Each time REPORT.ask appears, every bytes value that
the process's Python objects reach (the key table's dicts, the batches, the frames of its threads) is
searched for the needles listed in REPORT.ask, one hex-encoded needle a line, and REPORT gets one line
per needle: "held" or "not held". A value that went through the process and was let go is not held,
even if its bytes still linger in freed memory.
"""

import gc
import os
import sys
import threading
import time

from projector.cli import main

report = sys.argv[1]


def reachable_bytes(own: list[bytes]) -> list[bytes]:
    """Every bytes value Python objects reach, but for ``own`` (the needles themselves). The walk goes
    through untracked containers too: a dict of bytes alone is not tracked by the garbage collector."""
    found, seen = [], {id(needle) for needle in own}
    pending: list[object] = gc.get_objects()
    for frame in sys._current_frames().values():
        while frame is not None:
            pending.append(frame.f_locals)
            frame = frame.f_back
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, bytes | bytearray):
            found.append(bytes(obj))
        elif not isinstance(obj, str | int | float | type(None)):
            pending.extend(gc.get_referents(obj))
    return found


def answer() -> None:
    while True:
        if os.path.exists(report + ".ask"):
            with open(report + ".ask") as ask:
                needles = [bytes.fromhex(line) for line in ask.read().split()]
            os.unlink(report + ".ask")
            values = reachable_bytes(needles)
            lines = ["held" if any(n in v for v in values) else "not held" for n in needles]
            with open(report + ".tmp", "w") as out:
                out.write("\n".join(lines) + "\n")
            os.rename(report + ".tmp", report)
        time.sleep(0.05)


threading.Thread(target=answer, daemon=True).start()
main(sys.argv[3:])
