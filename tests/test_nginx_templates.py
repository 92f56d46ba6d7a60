"""Real nginx whose upstream block is rendered from the backends registered in etcd: a backend and a
certificate in one transaction are one generation and one reload, and a template that fails keeps
nginx on its last good configuration."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from etcd_server import free_port
from harness import Run, wait_for
from pki import der, https_get, server_pair

UPSTREAM = """\
upstream web {
{%- for name in ls("services/web") %}
    server {{ keys["services/web/" ~ name] }};
{%- endfor %}
    keepalive {{ keys["web/keepalive"] }};
}
"""


def backend(name: str) -> Iterator[int]:
    """An HTTP server on a loopback port that answers with its name."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


@pytest.fixture
def backends() -> Iterator[tuple[int, int]]:
    first, second = backend("backend one"), backend("backend two")
    yield next(first), next(second)
    for generator in (first, second):
        generator.close()


def answers(port: int, requests: int = 8) -> set[bytes]:
    return {https_get(port)[0].rsplit(b"\r\n\r\n", 1)[1] for _ in range(requests)}


def test_nginx_upstreams_rendered_from_etcd(run: Run, tmp_path: Path, backends: tuple[int, int]) -> None:
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if nginx is None:
        pytest.skip("needs nginx (Debian's nginx; scripts/setup --tests installs it)")
    work, port = tmp_path / "nginx", free_port()
    work.mkdir()
    (work / "upstream.conf.j2").write_text(UPSTREAM)
    error_log = work / "error.log"
    (work / "nginx.conf").write_text(
        f"pid {work}/nginx.pid;\nerror_log {error_log} notice;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    include {run.target}/upstream.conf;\n"
        + "".join(
            f"    {kind}_temp_path {work}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    server {{\n        listen 127.0.0.1:{port} ssl;\n"
        f"        ssl_certificate {run.target}/cert.pem;\n        ssl_certificate_key {run.target}/key.pem;\n"
        "        location / {\n            proxy_pass http://web;\n            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n        }\n'
        "    }\n}\n"
    )
    first, second = server_pair(), server_pair()
    run.etcd.put(
        ("/cfg/services/web/one", f"127.0.0.1:{backends[0]}"),
        ("/cfg/web/keepalive", "4"),
        ("/cfg/cert.pem", first[0]),
        ("/cfg/key.pem", first[1]),
    )
    command = [
        nginx,
        "-p",
        str(work),
        "-c",
        str(work / "nginx.conf"),
        "-e",
        str(error_log),
        "-g",
        "daemon off;",
    ]
    template = f"--template={work / 'upstream.conf.j2'}=upstream.conf"
    try:
        run.start("--signal=SIGHUP", template, command=command)
        wait_for(
            lambda: _serving(port),
            30,
            f"nginx serving; its log:\n{error_log.read_text() if error_log.exists() else ''}",
        )
        assert answers(port) == {b"backend one\n"} and https_get(port)[1] == der(first[0])
        assert (run.target / "upstream.conf").read_text().count("server 127.0.0.1:") == 1

        run.etcd.put(
            ("/cfg/services/web/two", f"127.0.0.1:{backends[1]}"),
            ("/cfg/cert.pem", second[0]),
            ("/cfg/key.pem", second[1]),
        )
        wait_for(lambda: https_get(port)[1] == der(second[0]), 15, "the new certificate served")
        wait_for(lambda: answers(port) == {b"backend one\n", b"backend two\n"}, 15, "both backends served")
        assert error_log.read_text().count("(SIGHUP) received") == 1  # one transaction, one reload

        run.etcd.delete("/cfg/web/keepalive")  # the template fails: nginx keeps its configuration
        run.wait_log("failed at revision")
        assert answers(port) == {b"backend one\n", b"backend two\n"}
        assert error_log.read_text().count("(SIGHUP) received") == 1
    finally:
        run.stop()


def _serving(port: int) -> bool:
    try:
        https_get(port)
    except OSError:
        return False
    return True
