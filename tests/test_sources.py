"""What a projection is made of, end to end against a real etcd: decoded values (and, as they land,
several prefixes, chosen keys and per-file owners)."""

from __future__ import annotations

import base64

from etcd_server import free_port
from harness import Run, metric


def test_base64_values_are_decoded_and_a_bad_one_keeps_the_last_good_file(run: Run) -> None:
    der = bytes(range(256))
    run.etcd.put(
        ("/cfg/ca.der", base64.b64encode(der)),
        ("/cfg/url.bin", base64.urlsafe_b64encode(b"\xfb\xff\xfe").rstrip(b"=")),  # URL-safe, unpadded
        ("/cfg/wrapped.der", base64.encodebytes(der)),  # as `base64` prints it: lines of 76, a newline
        ("/cfg/plain.conf", "AAAA"),
    )
    port = free_port()
    flags = ("--decode=*.der=base64", "--decode=*.bin=base64", f"--metrics-address=127.0.0.1:{port}")
    run.start("--signal=SIGHUP", *flags)
    run.wait_started()
    expected = {"ca.der": der, "url.bin": b"\xfb\xff\xfe", "wrapped.der": der, "plain.conf": b"AAAA"}
    assert run.files() == expected

    run.etcd.put(("/cfg/ca.der", "not base64!"), ("/cfg/new.der", "AAE"))  # the new key still goes through
    record = run.wait_signals(1)[-1]
    assert record["files"]["new.der"] == "\x00\x01" and run.files()["ca.der"] == der
    run.wait_log("refusing the value of key '/cfg/ca.der': it is not valid base64 (--decode)")
    assert "not base64!" not in run.log and metric(port, "dispenser_rejected_keys") == 1

    run.etcd.put(("/cfg/bad.der", "a+b-"))  # a new key whose value does not decode: no file at all
    run.wait_log("refusing the value of key '/cfg/bad.der': it is not valid base64: it mixes")
    assert "bad.der" not in run.files() and metric(port, "dispenser_rejected_keys") == 2

    run.etcd.put(("/cfg/ca.der", base64.b64encode(b"rotated")))
    assert run.wait_signals(2)[-1]["files"]["ca.der"] == "rotated"
    assert metric(port, "dispenser_rejected_keys") == 1  # bad.der alone


def test_items_project_chosen_keys_under_chosen_paths_and_require_waits_for_one(run: Run) -> None:
    run.etcd.put(("/cfg/tls.crt", "CERT"), ("/cfg/acme-account.key", "ACCOUNT"), ("/cfg/notes", "n"))
    items = ("--item=tls.crt=cert.pem", "--item=tls.key=private/key.pem")
    run.start("--signal=SIGHUP", *items, "--require=private/key.pem")
    run.wait_log("waiting for private/key.pem before going on: not in etcd yet")
    assert run.files() == {"cert.pem": b"CERT"} and run.records_list() == []
    run.etcd.put(("/cfg/tls.key", "KEY"))
    assert run.wait_started()["files"] == {"cert.pem": "CERT", "private/key.pem": "KEY"}
    run.etcd.put(("/cfg/notes", "changed"), ("/cfg/more", "x"))  # keys no item names change nothing
    run.etcd.put(("/cfg/tls.crt", "CERT-2"))
    assert run.wait_signals(1)[-1]["files"] == {"cert.pem": "CERT-2", "private/key.pem": "KEY"}
    assert "ACCOUNT" not in run.log and "refusing" not in run.log
