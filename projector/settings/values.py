"""Single values of user input: modes, signals, users and groups, durations, addresses, the prefix,
globs over key paths.

Each parser raises ``ValueError`` with a message that says what is wrong with the value; the models in
options.py and etcd.py turn that into a :class:`UsageError` that names the flag or variable too.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import signal
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from ..decoding import ENCODINGS
from ..keys import RefusedKey, check_path

UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})


class UsageError(Exception):
    """A user's input is wrong; the message is one line that names what is wrong."""


def parse_mode(text: str) -> int:
    """``600``, ``0640`` and ``0o640`` are all octal file modes."""
    digits = text.strip().lower().removeprefix("0o")
    try:
        mode = int(digits, 8)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal mode such as 600 or 0640") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{text!r} is outside 000..777")
    return mode


def parse_signal(text: str) -> signal.Signals:
    """A catchable signal by name (``SIGHUP``, ``hup``, any case) or by number."""
    word = text.strip()
    try:
        sig = signal.Signals(int(word)) if word.isdigit() else signal.Signals[_signal_name(word)]
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not a signal name or number") from None
    if sig in UNCATCHABLE:
        raise ValueError(f"{sig.name} cannot be caught by the child, so it cannot mean 'files changed'")
    return sig


def _signal_name(word: str) -> str:
    name = word.upper()
    return name if name.startswith("SIG") else "SIG" + name


def resolve_owner(text: str) -> int:
    """A user name or numeric uid; only root may give files to another user."""
    uid = _resolve_id(text, lambda name: pwd.getpwnam(name).pw_uid, "user")
    if os.geteuid() != 0 and uid != os.geteuid():
        raise ValueError(f"only root can give files to another user than uid {os.geteuid()}")
    return uid


def resolve_group(text: str) -> int:
    """A group name or numeric gid; without root only one's own groups are allowed."""
    gid = _resolve_id(text, lambda name: grp.getgrnam(name).gr_gid, "group")
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise ValueError(f"only root can give files to a group it is not a member of (gid {gid})")
    return gid


def _resolve_id(text: str, lookup: Callable[[str], int], kind: str) -> int:
    word = text.strip()
    if word.isdigit():
        return int(word)
    try:
        return lookup(word)
    except KeyError:
        raise ValueError(f"no {kind} named {word!r}") from None


DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from ``500ms``, ``2s``, ``1.5m``, ``1h``; a bare number is seconds."""
    word = text.strip().lower()
    number, unit = word, "s"
    for suffix in sorted(DURATION_UNITS, key=len, reverse=True):
        if word.endswith(suffix):
            number, unit = word[: -len(suffix)], suffix
            break
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 2s or 1m") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{text!r} is not a duration such as 500ms, 2s or 1m")
    return seconds


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6; an empty host listens on every address)."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def normalize_prefix(text: str) -> bytes:
    """The prefix names a directory: ``/certs`` and ``/certs/`` are the same, ``/certsX`` is outside it."""
    if not text:
        raise ValueError("must not be empty (use / for every key that starts with /)")
    return text.rstrip("/").encode() + b"/"


def directory_mode(file_mode: int) -> int:
    """Directories: rwx for the owner, and read plus search for whoever may read the files."""
    readable = file_mode & 0o044
    return 0o700 | readable | (readable >> 2)


def first_error(exc: ValidationError, name_of: Callable[[str], str]) -> str:
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"] or message.startswith("--"):  # (it names its flag itself)
        return message
    return f"{name_of(str(error['loc'][0]))}: {message}"


def parse_glob(text: str) -> re.Pattern[str]:
    """A glob over key paths (what follows the prefix): ``*`` and ``?`` do not cross ``/``, ``**``
    does (``**/`` also matches no directory at all), ``[...]`` and ``[!...]`` are one character of a
    set, a backslash makes the next character plain."""
    if not text:
        raise ValueError("an empty glob matches nothing")
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if text.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = text.find("]", i + 2 if text[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                raise ValueError(f"{text!r} has a '[' without its ']'")
            body = text[i + 1 : end]
            negate = body[:1] in ("!", "^")
            members = re.escape(body[1:] if negate else body).replace("\\-", "-")
            out.append(f"(?!/)[{'^' if negate else ''}{members}]")
            i = end + 1
        elif char == "\\":
            if i + 1 == len(text):
                raise ValueError(f"{text!r} ends with a lone backslash")
            out.append(re.escape(text[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a glob: {exc.msg}") from None


def parse_wait(text: str) -> tuple[float, float]:
    """``MIN[:MAX]``: durations; MAX is 4 x MIN unless given, and no less than MIN."""
    quiet, colon, longest = text.partition(":")
    shortest = parse_duration(quiet)
    if shortest <= 0:
        raise ValueError(f"{text!r}: the quiet time must be more than 0")
    cap = parse_duration(longest) if colon else 4 * shortest
    if cap < shortest:
        raise ValueError(f"{text!r}: MAX is shorter than MIN")
    return shortest, cap


def parse_file_mode(text: str) -> tuple[re.Pattern[str], int]:
    """``GLOB=MODE``: files whose path matches GLOB get MODE (octal)."""
    glob, equals, mode = text.rpartition("=")
    if not equals or not glob:
        raise ValueError(f"{text!r} is not GLOB=MODE, such as '*.crt=0644'")
    return parse_glob(glob), parse_mode(mode)


def parse_max_removed(text: str) -> tuple[int, bool]:
    """``N`` files or ``P%`` of the live files: (the number, whether it is a percentage)."""
    word = text.strip()
    percent = word.endswith("%")
    digits = word.removesuffix("%").strip()
    if not digits.isdigit() or (percent and int(digits) > 100):
        raise ValueError(f"{text!r} is not a number of files (such as 10) or a percentage (such as 25%)")
    return int(digits), percent


def parse_decode(text: str) -> tuple[re.Pattern[str], str]:
    """``GLOB=ENCODING``: the values of keys whose path matches GLOB are decoded before they are written."""
    glob, equals, encoding = text.rpartition("=")
    if not equals or not glob:
        raise ValueError(f"{text!r} is not GLOB=ENCODING, such as '*.der=base64'")
    if encoding.strip().lower() not in ENCODINGS:
        raise ValueError(f"{encoding!r} is not an encoding this tool decodes ({', '.join(ENCODINGS)})")
    return parse_glob(glob), encoding.strip().lower()


def parse_file_owner(text: str) -> tuple[re.Pattern[str], int | None, int | None]:
    """``GLOB=USER[:GROUP]`` (or ``GLOB=:GROUP``): files whose path matches GLOB get that owner and
    group, by name or number."""
    glob, equals, owner = text.rpartition("=")
    user, _, group = owner.partition(":")
    if not equals or not glob or not (user or group):
        raise ValueError(f"{text!r} is not GLOB=USER[:GROUP], such as 'server.key=postgres'")
    return parse_glob(glob), resolve_owner(user) if user else None, resolve_group(group) if group else None


def parse_item(text: str) -> tuple[bytes, str]:
    """``KEY=PATH``: the key KEY (below the prefix) is projected at PATH (below the target)."""
    key, equals, path = text.partition("=")
    if not equals or not key or not path:
        raise ValueError(f"{text!r} is not KEY=PATH, such as 'tls.crt=cert.pem'")
    try:
        return key.encode(), check_path(path.strip("/"))
    except RefusedKey as refusal:
        raise ValueError(f"the path {path!r} {refusal}") from None


def parse_template(text: str) -> tuple[Path, str]:
    """``SRC=DEST``: the template file SRC is rendered into DEST (below the target); split at the last
    ``=``."""
    source, equals, dest = text.rpartition("=")
    if not equals or not source or not dest:
        raise ValueError(f"{text!r} is not SRC=DEST, such as 'nginx.conf.j2=nginx.conf'")
    try:
        return Path(source), check_path(dest.strip("/"))
    except RefusedKey as refusal:
        raise ValueError(f"the destination {dest!r} {refusal}") from None
