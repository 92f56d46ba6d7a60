"""Key rules: which etcd keys become which paths, and which are refused."""

from __future__ import annotations

import pytest

from projector.keys import RefusedKey, printable, relative_path

PREFIX = b"/cfg/"


@pytest.mark.parametrize(
    ("key", "path"),
    [
        (b"/cfg/a", "a"),
        (b"/cfg/a/b/c.pem", "a/b/c.pem"),
        (b"/cfg/.hidden", ".hidden"),
        (b"/cfg/x..y", "x..y"),
        ("/cfg/ünï".encode(), "ünï"),
        (b"/cfg/" + b"s" * 255, "s" * 255),
    ],
)
def test_accepted(key: bytes, path: str) -> None:
    assert relative_path(key, PREFIX) == path


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (b"/cfg/", "empty name"),
        (b"/cfg/../x", "'..' segment"),
        (b"/cfg/a/../../x", "'..' segment"),
        (b"/cfg/./x", "'.' segment"),
        (b"/cfg//abs", "empty path segment"),
        (b"/cfg/a/", "empty path segment"),
        (b"/cfg/a//b", "empty path segment"),
        (b"/cfg/..data", "reserved"),
        (b"/cfg/..2020_01_01_00_00_00.000000000", "reserved"),
        (b"/cfg/sub/..x", "reserved"),
        (b"/cfg/a\0b", "NUL"),
        (b"/cfg/\xff\xfe", "UTF-8"),
        (b"/cfg/" + b"s" * 256, "longer than 255"),
        (b"/cfg/" + b"/".join([b"p" * 200] * 21), "longer than 4096"),
        (b"/cfgX/a", "not under the prefix"),
    ],
)
def test_refused(key: bytes, reason: str) -> None:
    with pytest.raises(RefusedKey, match=reason):
        relative_path(key, PREFIX)


def test_printable_keys_cannot_forge_log_lines() -> None:
    shown = printable(b"/cfg/a\nFAKE LOG LINE\0\xff")
    assert "\n" not in shown and "\0" not in shown
    assert "\\n" in shown and "\\x00" in shown and "\\xff" in shown
