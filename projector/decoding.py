"""Values decoded before they become files (``--decode GLOB=base64``), as Kubernetes Secrets and
k8s-sidecar carry them and consul-template's and confd's ``base64Decode`` read them.

base64 here is forgiving where writers differ and strict where a mistake would reach a file: the
standard and the URL-safe alphabets (one per value), padding optional, whitespace ignored (``base64``
wraps its output at 76 columns); any other byte, or a length no encoder makes, refuses the value.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

ENCODINGS = ("base64",)
_WHITESPACE = re.compile(rb"\s+")


class Undecodable(ValueError):
    """A value that does not decode; the message names the encoding, never the value."""


def decode_base64(value: bytes) -> bytes:
    data = _WHITESPACE.sub(b"", value)
    urlsafe = b"-" in data or b"_" in data
    if urlsafe and (b"+" in data or b"/" in data):
        raise Undecodable("is not valid base64: it mixes the standard and the URL-safe alphabet")
    altchars = b"-_" if urlsafe else b"+/"
    data = data.rstrip(b"=")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), altchars=altchars, validate=True)
    except binascii.Error:
        raise Undecodable("is not valid base64") from None


DECODERS: dict[str, Callable[[bytes], bytes]] = {"base64": decode_base64}


class Decoding:
    """Which paths are decoded, and how: (glob, encoding) rules, the first match wins."""

    def __init__(self, rules: tuple[tuple[re.Pattern[str], str], ...] = ()) -> None:
        self.rules = tuple((glob, DECODERS[encoding]) for glob, encoding in rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def decode(self, path: str, value: bytes) -> bytes:
        """The bytes of the file at ``path`` for ``value``; :class:`Undecodable` if it does not decode."""
        for glob, decoder in self.rules:
            if glob.match(path):
                return decoder(value)
        return value
