"""Artifact store: fetch over real HTTP (with resume), verify, and clear errors."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from tests.conftest import ScratchInventory
from xnat_fleet import artifacts
from xnat_fleet.cli import cli

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    ranges: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        if self.path != "/files/standin.war":
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        body = PAYLOAD[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _pin(url: str, sha: str | None = None) -> artifacts.Pin:
    return artifacts.Pin(
        "xnat_war", "standin.war", "1.0", f"{url}/files/standin.war",
        sha or hashlib.sha256(PAYLOAD).hexdigest(), ("relay-kings",),
    )  # fmt: skip


def test_fetch_downloads_verifies_and_is_then_a_no_op(server: str, tmp_path: Path) -> None:
    pin = _pin(server)
    assert artifacts.fetch(tmp_path, pin).state == "ok"
    assert (tmp_path / "standin.war").read_bytes() == PAYLOAD
    assert artifacts.fetch(tmp_path, pin).state == "ok"
    assert _Handler.ranges == [None]  # the second fetch did not download again


def test_fetch_resumes_a_partial_download(server: str, tmp_path: Path) -> None:
    (tmp_path / "standin.war.part").write_bytes(PAYLOAD[:1000])
    assert artifacts.fetch(tmp_path, _pin(server)).state == "ok"
    assert _Handler.ranges == ["bytes=1000-"]
    assert (tmp_path / "standin.war").read_bytes() == PAYLOAD
    assert not (tmp_path / "standin.war.part").exists()


def test_a_mismatching_download_is_not_kept(server: str, tmp_path: Path) -> None:
    status = artifacts.fetch(tmp_path, _pin(server, "a" * 64))
    assert status.state == "mismatch"
    assert status.actual == hashlib.sha256(PAYLOAD).hexdigest()
    assert not (tmp_path / "standin.war").exists()


def test_require_names_file_checksum_and_how_to_stage(tmp_path: Path) -> None:
    (tmp_path / "standin.war").write_bytes(b"tampered")
    with pytest.raises(artifacts.ArtifactError) as err:
        artifacts.require(tmp_path, [_pin("https://example.org")])
    message = str(err.value)
    assert "standin.war" in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert f"copy the file from https://example.org/files/standin.war to {tmp_path}" in message


def test_placeholder_checksums_are_refused(tmp_path: Path) -> None:
    status = artifacts.check(tmp_path, _pin("https://example.org", artifacts.PLACEHOLDER))
    assert status.state == "placeholder"


def test_cli_verify_on_a_staged_store(scratch: ScratchInventory, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    # pin every artifact of the example to a file staged by hand
    for key in ("xnat_war", "tomcat", "jdk"):
        content = f"{key} staged by hand".encode()
        name = f"{key}.bin"
        (store / name).write_bytes(content)
        scratch.set("group_vars/all/xnat.yml", f"fleet_artifacts.{key}.file", name)
        scratch.set(
            "group_vars/all/xnat.yml",
            f"fleet_artifacts.{key}.sha256",
            hashlib.sha256(content).hexdigest(),
        )
    for plugin in ("xsync", "ldap-auth", "openid-auth", "container-service"):
        content = plugin.encode()
        (store / f"{plugin}.jar").write_bytes(content)
        scratch.set(
            "group_vars/all/xnat.yml", f"fleet_artifacts.plugins.{plugin}.file", f"{plugin}.jar"
        )
        scratch.set(
            "group_vars/all/xnat.yml",
            f"fleet_artifacts.plugins.{plugin}.sha256",
            hashlib.sha256(content).hexdigest(),
        )
    args = ["artifacts", "verify", "-i", str(scratch.path), "--store", str(store)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("✓") == 7
    (store / "xsync.jar").write_bytes(b"one flipped byte")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "plugin:xsync (xsync.jar): checksum mismatch" in result.output
