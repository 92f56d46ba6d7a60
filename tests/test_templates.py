"""Templates rendered into the same generation as the projected files, end to end against a real etcd."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

from etcd_server import free_port
from harness import Run, console_script, metric, wait_for

UPSTREAM = """\
upstream web {
{%- for name in ls("services/web") %}
    server {{ keys["services/web/" ~ name] }};
{%- endfor %}
}
# revision {{ revision }}
"""


def template(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_transaction_gives_one_generation_with_the_files_and_the_templates(
    run: Run, tmp_path: Path
) -> None:
    source = template(tmp_path, "upstream.conf.j2", UPSTREAM)
    run.etcd.put(("/cfg/services/web/a", "10.0.0.1:80"), ("/cfg/cert.pem", "C1"))
    run.start("--signal=SIGHUP", f"--template={source}=nginx/upstream.conf")
    files = run.wait_started()["files"]
    assert "server 10.0.0.1:80;" in files["nginx/upstream.conf"] and files["cert.pem"] == "C1"
    revision = run.etcd.put(("/cfg/services/web/b", "10.0.0.2:80"), ("/cfg/cert.pem", "C2"))
    files = run.wait_signals(1)[-1]["files"]
    assert files["cert.pem"] == "C2" and f"# revision {revision}" in files["nginx/upstream.conf"]
    assert "server 10.0.0.1:80;\n    server 10.0.0.2:80;" in files["nginx/upstream.conf"]


def test_a_failing_render_keeps_the_last_good_generation(run: Run, tmp_path: Path) -> None:
    source = template(
        tmp_path, "app.json.j2", '{"db": "{{ keys["db/url"] }}", "pool": {{ keys["db/pool"] }}}\n'
    )
    run.etcd.put(("/cfg/db/url", "postgres://db"), ("/cfg/db/pool", "5"))
    port = free_port()
    run.start("--signal=SIGHUP", f"--template={source}=app.json", f"--metrics-address=127.0.0.1:{port}")
    assert run.wait_started()["files"]["app.json"] == '{"db": "postgres://db", "pool": 5}\n'
    revision = run.etcd.delete("/cfg/db/pool")
    run.wait_log(
        f"template {source} (line 1) failed at revision {revision}: UndefinedError: no key at 'db/pool'"
    )
    assert run.files()["app.json"] == b'{"db": "postgres://db", "pool": 5}\n' and run.signals() == []
    assert metric(port, 'dispenser_errors_total{kind="template"}') == 1
    assert "postgres://db" not in run.log  # never a value
    run.etcd.put(("/cfg/db/pool", "8"))
    assert run.wait_signals(1)[-1]["files"]["app.json"] == '{"db": "postgres://db", "pool": 8}\n'


def test_only_the_templates_whose_inputs_changed_are_rendered_again(run: Run, tmp_path: Path) -> None:
    flags = [
        f"--template={template(tmp_path, f't{n}.j2', '{{ keys[' + repr(f'k{n}') + '] }}')}=out/{n}"
        for n in range(10)
    ]
    run.etcd.put(*((f"/cfg/k{n}", str(n)) for n in range(10)), ("/cfg/other", "x"))
    port = free_port()
    run.start("--signal=SIGHUP", "--template-only", f"--metrics-address=127.0.0.1:{port}", *flags)
    assert run.wait_started()["files"] == {f"out/{n}": str(n) for n in range(10)}  # the keys stay out
    renders = wait_for(lambda: metric(port, "dispenser_template_renders_total"), what="renders")
    assert renders == 10
    run.etcd.put(("/cfg/other", "y"))  # no template reads it: nothing is rendered, nothing changes
    run.etcd.put(("/cfg/k3", "three"))
    assert run.wait_signals(1)[-1]["files"]["out/3"] == "three"
    assert metric(port, "dispenser_template_renders_total") == 11
    assert len(run.signals()) == 1


def test_a_key_on_a_templates_path_is_refused(run: Run, tmp_path: Path) -> None:
    source = template(tmp_path, "t.j2", "rendered {{ keys['a'] }}\n")
    run.etcd.put(("/cfg/a", "1"), ("/cfg/out.conf", "a key"))
    check = '--check=grep -q "rendered 1" "$DISPENSER_CANDIDATE/out.conf"'  # --check sees it
    run.start("--signal=SIGHUP", f"--template={source}=out.conf", "--file-mode=out.conf=0644", check)
    assert run.wait_started()["files"] == {"a": "1", "out.conf": "rendered 1\n"}
    run.wait_log("refusing key '/cfg/out.conf': it would replace a rendered --template")
    assert stat.S_IMODE(os.stat(run.target / "out.conf").st_mode) == 0o644  # its mode as any file's


def test_a_reader_never_sees_a_rendered_file_of_another_revision(run: Run, tmp_path: Path) -> None:
    source = template(tmp_path, "copy.j2", "{{ keys['cert.pem'] }}")
    run.etcd.put(("/cfg/cert.pem", "0"))
    run.start(f"--template={source}=copy.pem")  # (no signal: the recording child would take 1,000)
    run.wait_started()
    seen: set[tuple[str, str]] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                generation = run.target / os.readlink(run.target / "..data")
                seen.add(((generation / "cert.pem").read_text(), (generation / "copy.pem").read_text()))
            except FileNotFoundError:
                continue

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with run.etcd.client() as client:
            for n in range(1, 1001):
                client.put("/cfg/cert.pem", str(n))
        wait_for(lambda: run.files().get("copy.pem") == b"1000", what="the last revision rendered")
    finally:
        stop.set()
        thread.join()
    mixed = {pair for pair in seen if pair[0] != pair[1]}
    assert not mixed and len(seen) > 1, sorted(mixed)


def test_bad_templates_are_usage_errors(tmp_path: Path) -> None:
    broken = template(tmp_path, "broken.j2", "line one\n{% for x in %}\n")
    cases = [
        (f"--template={tmp_path / 'missing.j2'}=out", "cannot read"),
        (f"--template={broken}=out", f"{broken}:2: "),
        (f"--template={broken}=../out", "'..' segment"),
        (f"--template={broken}=..data", "reserved"),
    ]
    for flag, error in cases:
        done = subprocess.run(
            [console_script(), "--prefix=/cfg", f"--target={tmp_path / 't'}", flag],
            capture_output=True,
            text=True,
            env={**os.environ, "ETCD_ENDPOINTS": "127.0.0.1:1"},
            timeout=30,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and "--template" in lines[0] and error in lines[0], (
            lines
        )
    assert not (tmp_path / "t").exists()


def test_an_edited_template_is_one_generation_and_one_signal(run: Run, tmp_path: Path) -> None:
    source = template(tmp_path, "site.conf.j2", "listen {{ keys['port'] }};\n")
    run.etcd.put(("/cfg/port", "80"))
    port = free_port()
    run.start("--signal=SIGHUP", f"--template={source}=site.conf", f"--metrics-address=127.0.0.1:{port}")
    assert run.wait_started()["files"]["site.conf"] == "listen 80;\n"
    edited = tmp_path / "edited.tmp"  # as editors save: a new file renamed over the old one
    edited.write_text("listen {{ keys['port'] }} ssl;\n")
    edited.rename(source)
    assert run.wait_signals(1)[-1]["files"]["site.conf"] == "listen 80 ssl;\n"
    source.write_text("listen {{ keys['port'] ;\n")  # in place, and broken: a failure, not an exit
    run.wait_log(f"template {source}:1: ")
    wait_for(lambda: metric(port, 'dispenser_errors_total{kind="template"}') == 1, what="the failure counted")
    assert run.files()["site.conf"] == b"listen 80 ssl;\n" and len(run.signals()) == 1
    source.write_text("listen {{ keys['port'] }} http2;\n")
    assert run.wait_signals(2)[-1]["files"]["site.conf"] == "listen 80 http2;\n"
    assert run.process is not None and run.process.poll() is None
