"""Flags and ETCD_* variables: parsing and the one-line errors."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from projector.settings import (
    EtcdConfig,
    Tls,
    UsageError,
    child_environment,
    directory_mode,
    load_etcd_config,
    load_options,
    parse_duration,
    parse_mode,
    parse_signal,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


@pytest.mark.parametrize(("text", "mode"), [("600", 0o600), ("0640", 0o640), ("0o644", 0o644), ("0", 0)])
def test_modes(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["8", "1000", "rw-", "", "-1"])
def test_bad_modes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_mode(text)


@pytest.mark.parametrize(
    ("text", "sig"),
    [("SIGHUP", signal.SIGHUP), ("hup", signal.SIGHUP), ("Usr1", signal.SIGUSR1), ("15", signal.SIGTERM)],
)
def test_signals(text: str, sig: signal.Signals) -> None:
    assert parse_signal(text) == sig


@pytest.mark.parametrize("text", ["SIGKILL", "kill", "9", "STOP", "19", "nope", "999"])
def test_bad_signals(text: str) -> None:
    with pytest.raises(ValueError):
        parse_signal(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), ("3", 3.0), (" 2S ", 2.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["fast", "", "ms", "-1s", "1d", "nan", "infs"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_directory_mode_adds_search_where_files_are_readable() -> None:
    assert directory_mode(0o600) == 0o700
    assert directory_mode(0o640) == 0o750
    assert directory_mode(0o644) == 0o755
    assert directory_mode(0o666) == 0o755  # never group- or world-writable directories


def test_prefix_is_a_directory() -> None:
    assert load_options(prefix="/certs", target="t").prefix[0].prefix == b"/certs/"
    assert load_options(prefix="/certs/", target="t").prefix[0].prefix == b"/certs/"
    assert load_options(prefix="/", target="t").prefix[0].prefix == b"/"


def test_several_prefixes_with_directories_and_items() -> None:
    given = [("/certificates=tls", ["fullchain.pem=cert.pem"]), ("/nginx", [])]
    tls, nginx = load_options(prefix=given, target="t").prefix
    assert (tls.prefix, tls.directory, tls.items) == (
        b"/certificates/",
        "tls",
        ((b"fullchain.pem", "cert.pem"),),
    )
    assert (nginx.prefix, nginx.directory, nginx.items) == (b"/nginx/", "", ())
    assert tls.path(b"/certificates/fullchain.pem") == "tls/cert.pem"
    assert tls.key("tls/cert.pem") == b"/certificates/fullchain.pem"


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ([("/a", []), ("/a/", [])], "'/a/' is given twice"),
        ([("/a", []), ("/a/b", [])], "'/a/' and '/a/b/' overlap"),
        ([("/a/b", []), ("/", [])], "'/' and '/a/b/' overlap"),
        ([("/a=../up", [])], "the directory '../up' has a '..' segment"),
        ([("/a", ["k=x", "k=y"])], "the key 'k' is chosen twice"),
    ],
)
def test_bad_prefixes_name_the_flag(given: list[tuple[str, list[str]]], error: str) -> None:
    flag = "--item" if "chosen" in error else "--prefix"
    with pytest.raises(UsageError, match=rf"^{flag}: .*{re.escape(error)}"):
        load_options(prefix=given, target="t")


def test_option_errors_name_the_flag() -> None:
    with pytest.raises(UsageError, match=r"^--mode: "):
        load_options(prefix="/c", target="t", mode="9")
    with pytest.raises(UsageError, match=r"^--signal: "):
        load_options(prefix="/c", target="t", signal="KILL")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("ETCD_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_default_endpoint(env: pytest.MonkeyPatch) -> None:
    config = load_etcd_config()
    assert config == EtcdConfig(endpoints=config.endpoints)
    assert config.describe() == "http://127.0.0.1:2379"


def test_endpoint_forms(env: pytest.MonkeyPatch) -> None:
    env.setenv("ETCD_ENDPOINTS", "a:1, b ,[::1]:3")
    assert [e.netloc for e in load_etcd_config().endpoints] == ["a:1", "b:2379", "[::1]:3"]
    env.setenv("ETCD_ENDPOINTS", "https://a:1,https://b:2")
    assert load_etcd_config().tls == Tls()


def test_credentials_and_file_forms(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret:with:colons\n")
    env.setenv("ETCD_USERNAME", "alice")
    env.setenv("ETCD_PASSWORD_FILE", str(tmp_path / "pw"))
    config = load_etcd_config()
    assert (config.username, config.password) == ("alice", "s3cret:with:colons")
    assert "s3cret" not in config.describe()


def test_username_and_password_splits_at_the_first_colon(env: pytest.MonkeyPatch) -> None:
    env.setenv("ETCD_USERNAME_AND_PASSWORD", "bob:pa:ss")
    config = load_etcd_config()
    assert (config.username, config.password) == ("bob", "pa:ss")


def test_empty_variables_count_as_unset(env: pytest.MonkeyPatch) -> None:
    env.setenv("ETCD_USERNAME", "")
    env.setenv("ETCD_PASSWORD", "")
    assert load_etcd_config().username is None


def test_tls_settings(env: pytest.MonkeyPatch) -> None:
    env.setenv("ETCD_SERVER_CA", PEM)
    env.setenv("ETCD_CLIENT_CERT", PEM)
    env.setenv("ETCD_CLIENT_KEY", PEM.replace("CERTIFICATE", "PRIVATE KEY"))
    tls = load_etcd_config().tls
    assert tls is not None and tls.server_ca == PEM.encode() and tls.client_key is not None
    assert load_etcd_config().describe().startswith("https://")


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"ETCD_ENDPOINTS": "http://a:1,https://b:2"}, "mixes"),
        ({"ETCD_ENDPOINTS": " , "}, "ETCD_ENDPOINTS"),
        ({"ETCD_ENDPOINTS": "http://a:1", "ETCD_SERVER_CA": PEM}, "ETCD_ENDPOINTS"),
        ({"ETCD_CLIENT_CERT": PEM}, "ETCD_CLIENT_KEY"),
        ({"ETCD_USERNAME": "u", "ETCD_USERNAME_FILE": "/x"}, "ETCD_USERNAME and ETCD_USERNAME_FILE"),
    ],
)
def test_environment_errors_name_the_variable(
    env: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        env.setenv(name, value)
    with pytest.raises(UsageError, match=named):
        load_etcd_config()


def test_child_environment_has_no_etcd_secrets() -> None:
    environ = {
        "PATH": "/bin",
        "ETCD_ENDPOINTS": "x",
        "ETCD_USERNAME": "u",
        "ETCD_PASSWORD": "p",
        "ETCD_PASSWORD_FILE": "/p",
        "ETCD_USERNAME_AND_PASSWORD": "u:p",
        "ETCD_USERNAME_AND_PASSWORD_FILE": "/up",
        "ETCD_CLIENT_KEY": "k",
        "ETCD_CLIENT_KEY_FILE": "/k",
    }
    assert child_environment(environ) == {"PATH": "/bin", "ETCD_ENDPOINTS": "x", "ETCD_USERNAME": "u"}


def test_only_root_gives_files_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    monkeypatch.setattr(os, "getgroups", lambda: [1000, 27])
    assert load_options(prefix="/c", target="t", owner="1000", group="27").ownership.gid == 27
    with pytest.raises(UsageError, match=r"^--owner: only root"):
        load_options(prefix="/c", target="t", owner="0")
    with pytest.raises(UsageError, match=r"^--group: only root"):
        load_options(prefix="/c", target="t", group="0")
