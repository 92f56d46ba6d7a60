"""systemd's readiness protocol: READY=1, STATUS=..., STOPPING=1 to ``$NOTIFY_SOCKET``, when set.

The protocol is one datagram of ``KEY=value`` lines to a Unix socket (``@`` at the start of the path
names an abstract one); a few lines of our own do it without linking libsystemd. Nothing is sent when
the variable is unset, and a failure to send is logged once and otherwise ignored: notifications must
never stop the files from flowing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self._failed = False

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd at $NOTIFY_SOCKET: %s", exc.strerror or exc)
            self._failed = True


def from_environment() -> Notifier:
    return Notifier(os.environ.get("NOTIFY_SOCKET"))
