"""The host-side apt cache (xnat_fleet.aptcache) against a local fake Debian mirror, no network."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from xnat_fleet import aptcache

DEB_PATH = "/debian/pool/main/h/hello/hello_2.10-3+b1_amd64.deb"
SLOW_PATH = "/debian/pool/main/s/slow/slow_1.0_amd64.deb"
TRUNC_PATH = "/debian/pool/main/t/trunc/trunc_1.0_amd64.deb"
MISSING_PATH = "/debian/pool/main/n/nope/nope_1.0_amd64.deb"
PACKAGES_PATH = "/debian/dists/bookworm/main/binary-amd64/Packages"


def blob(seed: str, size: int) -> bytes:
    """Deterministic incompressible bytes standing in for a package."""
    out = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(size // 32 + 1))
    return out[:size]


DEB = blob("deb", 300_000)
SLOW = blob("slow", 200_000)
TRUNC = blob("trunc", 100_000)
PACKAGES = b"Package: hello\nVersion: 2.10-3+b1\nFilename: pool/main/h/hello/hello.deb\n\n"
LAST_MODIFIED = "Sat, 01 Jun 2024 10:00:00 GMT"
ETAG = '"packages-v1"'
DEB_CTYPE = "application/vnd.debian.binary-package"


@dataclass
class Upstream:
    """A fake Debian mirror that counts every request it receives."""

    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    headers: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, path: str, headers: dict[str, str]) -> None:
        with self.lock:
            self.hits[path] += 1
            self.headers.append((path, headers))

    def seen(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, h in self.headers if p == path]


def make_upstream_handler(state: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            state.record(self.path, {k.lower(): v for k, v in self.headers.items()})
            if self.path == DEB_PATH:
                self._send(200, DEB, DEB_CTYPE, {"Last-Modified": LAST_MODIFIED, "ETag": '"d1"'})
            elif self.path == SLOW_PATH:
                self._send(200, SLOW, DEB_CTYPE, {}, pause=0.02)
            elif self.path == TRUNC_PATH:
                self.send_response(200)
                self.send_header("Content-Length", str(len(TRUNC)))
                self.end_headers()
                self.wfile.write(TRUNC[: len(TRUNC) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif self.path == PACKAGES_PATH:
                self._packages()
            else:
                self._send(404, b"not found\n", "text/plain", {})

        def _packages(self) -> None:
            headers = {"Last-Modified": LAST_MODIFIED, "ETag": ETAG}
            if self.headers.get("If-None-Match") == ETAG or (
                self.headers.get("If-Modified-Since") == LAST_MODIFIED
            ):
                self.send_response(304)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                return
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes=") : -1])
                part = PACKAGES[start:]
                headers["Content-Range"] = f"bytes {start}-{len(PACKAGES) - 1}/{len(PACKAGES)}"
                self._send(206, part, "text/plain", headers)
                return
            self._send(200, PACKAGES, "text/plain", headers)

        def _send(
            self,
            status: int,
            body: bytes,
            ctype: str,
            headers: dict[str, str],
            pause: float = 0.0,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "HEAD":
                return
            step = 16_384
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                if pause:
                    self.wfile.flush()
                    time.sleep(pause)

    return Handler


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = Upstream()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_upstream_handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    with serving(server):
        yield state


class Proxy:
    def __init__(self, cache_dir: Path, upstream: Upstream) -> None:
        self.cache_dir = cache_dir
        self.upstream = upstream
        self.server = aptcache.make_server(
            "127.0.0.1", 0, cache_dir, allow=[f"127.0.0.1:{upstream.port}"]
        )
        self.port = self.server.port

    def request(
        self, url: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, url, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return self.request(self.upstream.base + path, **kw)

    def entry(self, path: str) -> Path:
        key = self.server.cache.key_path("127.0.0.1", self.upstream.port, path)
        assert key is not None
        return key


@pytest.fixture
def make_proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Any]:
    started: list[contextlib.ExitStack] = []

    def start(cache_dir: Path | None = None) -> Proxy:
        proxy = Proxy(cache_dir or tmp_path / "cache", upstream)
        stack = contextlib.ExitStack()
        stack.enter_context(serving(proxy.server))
        started.append(stack)
        return proxy

    yield start
    for stack in started:
        stack.close()


@pytest.fixture
def proxy(make_proxy: Any) -> Proxy:
    return make_proxy()  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- .deb caching ---------------------------------------------------------------------------------


def test_first_fetch_is_a_miss_second_a_hit_without_upstream(
    proxy: Proxy, upstream: Upstream
) -> None:
    status, headers, body = proxy.get(DEB_PATH)
    assert (status, headers["x-cache"], body) == (200, "MISS", DEB)
    assert headers["last-modified"] == LAST_MODIFIED
    assert headers["etag"] == '"d1"'
    assert headers["content-type"] == DEB_CTYPE
    assert upstream.hits[DEB_PATH] == 1

    entry = proxy.entry(DEB_PATH)
    assert entry.read_bytes() == DEB
    meta = json.loads(entry.with_name(entry.name + ".meta").read_text())
    assert meta["size"] == len(DEB)
    assert meta["sha256"] == hashlib.sha256(DEB).hexdigest()

    status, headers, body = proxy.get(DEB_PATH)
    assert (status, headers["x-cache"], body) == (200, "HIT", DEB)
    assert headers["content-length"] == str(len(DEB))
    assert headers["last-modified"] == LAST_MODIFIED
    assert headers["content-type"] == DEB_CTYPE
    assert upstream.hits[DEB_PATH] == 1  # the HIT never reached upstream


def test_hit_honours_a_range_and_head(proxy: Proxy, upstream: Upstream) -> None:
    proxy.get(DEB_PATH)
    status, headers, body = proxy.get(DEB_PATH, headers={"Range": "bytes=1000-"})
    assert (status, headers["x-cache"]) == (206, "HIT")
    assert body == DEB[1000:]
    assert headers["content-range"] == f"bytes 1000-{len(DEB) - 1}/{len(DEB)}"
    status, headers, body = proxy.request(upstream.base + DEB_PATH, method="HEAD")
    assert (status, headers["x-cache"], body) == (200, "HIT", b"")
    assert headers["content-length"] == str(len(DEB))
    assert upstream.hits[DEB_PATH] == 1


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _drop_sidecar(path: Path) -> None:
    path.with_name(path.name + ".meta").unlink()


def _garble_sidecar(path: Path) -> None:
    path.with_name(path.name + ".meta").write_text("{not json")


@pytest.mark.parametrize("damage", [_flip_a_byte, _truncate, _drop_sidecar, _garble_sidecar])
def test_damaged_entry_is_refetched_and_served_correctly(
    proxy: Proxy, upstream: Upstream, damage: Any
) -> None:
    proxy.get(DEB_PATH)
    entry = proxy.entry(DEB_PATH)
    damage(entry)
    assert entry.exists()

    status, headers, body = proxy.get(DEB_PATH)
    assert (status, headers["x-cache"]) == (200, "MISS")
    assert body == DEB
    assert upstream.hits[DEB_PATH] == 2
    assert entry.read_bytes() == DEB  # repaired in place
    status, headers, body = proxy.get(DEB_PATH)
    assert (status, headers["x-cache"], body) == (200, "HIT", DEB)
    assert upstream.hits[DEB_PATH] == 2


def test_flipped_byte_keeps_size_but_is_caught_by_sha256(proxy: Proxy, upstream: Upstream) -> None:
    proxy.get(DEB_PATH)
    entry = proxy.entry(DEB_PATH)
    before = entry.stat()
    _flip_a_byte(entry)
    os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide the change from mtime
    assert entry.stat().st_size == len(DEB)
    _, headers, body = proxy.get(DEB_PATH)
    assert body == DEB
    assert headers["x-cache"] == "MISS"


def test_leftover_temp_file_is_cleaned_at_start_and_never_served(
    tmp_path: Path, upstream: Upstream, make_proxy: Any
) -> None:
    cache = tmp_path / "cache"
    first = make_proxy(cache)
    entry_dir = first.entry(DEB_PATH).parent
    entry_dir.mkdir(parents=True)
    leftover = entry_dir / ".tmp-killed.part"
    leftover.write_bytes(DEB[:5000])  # what a killed download leaves behind
    first.server.shutdown()

    proxy = make_proxy(cache)  # a fresh start cleans it
    assert not leftover.exists()
    status, headers, body = proxy.get(DEB_PATH)
    assert (status, headers["x-cache"], body) == (200, "MISS", DEB)
    assert upstream.hits[DEB_PATH] == 1
    assert sorted(p.name for p in entry_dir.iterdir()) == [
        Path(DEB_PATH).name,
        Path(DEB_PATH).name + ".meta",
    ]


def test_upstream_closing_mid_body_leaves_no_entry(proxy: Proxy, upstream: Upstream) -> None:
    with pytest.raises(http.client.IncompleteRead) as short:
        proxy.get(TRUNC_PATH)
    assert short.value.partial == TRUNC[: len(TRUNC) // 2]
    entry = proxy.entry(TRUNC_PATH)
    assert not entry.exists()
    assert list(entry.parent.iterdir()) == []  # no sidecar, no temp file
    with pytest.raises(http.client.IncompleteRead):
        proxy.get(TRUNC_PATH)
    assert upstream.hits[TRUNC_PATH] == 2  # nothing was cached: asked again


def test_upstream_404_for_a_deb_is_passed_on_and_not_cached(
    proxy: Proxy, upstream: Upstream
) -> None:
    status, headers, _ = proxy.get(MISSING_PATH)
    assert (status, headers["x-cache"]) == (404, "PASS")
    assert not proxy.entry(MISSING_PATH).exists()
    proxy.get(MISSING_PATH)
    assert upstream.hits[MISSING_PATH] == 2


def test_concurrent_requests_for_one_uncached_file_both_get_the_right_bytes(
    proxy: Proxy, upstream: Upstream
) -> None:
    barrier = threading.Barrier(3)
    results: list[tuple[int, dict[str, str], bytes]] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            barrier.wait(5)
            results.append(proxy.get(SLOW_PATH))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(results) == 3
    assert all(status == 200 and body == SLOW for status, _, body in results)
    assert proxy.entry(SLOW_PATH).read_bytes() == SLOW
    asked = upstream.hits[SLOW_PATH]
    _, headers, body = proxy.get(SLOW_PATH)
    assert (headers["x-cache"], body) == ("HIT", SLOW)
    assert upstream.hits[SLOW_PATH] == asked


def test_keep_alive_connection_serves_several_requests(proxy: Proxy, upstream: Upstream) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        got = []
        for path in (DEB_PATH, DEB_PATH, PACKAGES_PATH, MISSING_PATH, DEB_PATH):
            conn.request("GET", upstream.base + path)
            resp = conn.getresponse()
            got.append((resp.status, resp.getheader("X-Cache"), resp.read()))
    finally:
        conn.close()
    assert got == [
        (200, "MISS", DEB),
        (200, "HIT", DEB),
        (200, "PASS", PACKAGES),
        (404, "PASS", b"not found\n"),
        (200, "HIT", DEB),
    ]


# -- pass-through ---------------------------------------------------------------------------------


def test_index_files_are_never_cached(proxy: Proxy, upstream: Upstream) -> None:
    for _ in range(3):
        status, headers, body = proxy.get(PACKAGES_PATH)
        assert (status, headers["x-cache"], body) == (200, "PASS", PACKAGES)
        assert headers["etag"] == ETAG
        assert headers["last-modified"] == LAST_MODIFIED
        assert headers["content-length"] == str(len(PACKAGES))
    assert upstream.hits[PACKAGES_PATH] == 3
    assert aptcache.Cache(proxy.cache_dir).stats() == (0, 0)


@pytest.mark.parametrize(
    "conditional", [{"If-None-Match": ETAG}, {"If-Modified-Since": LAST_MODIFIED}]
)
def test_conditional_requests_are_forwarded(
    proxy: Proxy, upstream: Upstream, conditional: dict[str, str]
) -> None:
    status, headers, body = proxy.get(PACKAGES_PATH, headers=conditional)
    assert (status, body) == (304, b"")
    assert headers["etag"] == ETAG
    [seen] = upstream.seen(PACKAGES_PATH)
    name, value = next(iter(conditional.items()))
    assert seen[name.lower()] == value


def test_range_is_forwarded_for_pass_through(proxy: Proxy, upstream: Upstream) -> None:
    status, headers, body = proxy.get(PACKAGES_PATH, headers={"Range": "bytes=9-"})
    assert (status, body) == (206, PACKAGES[9:])
    assert headers["content-range"] == f"bytes 9-{len(PACKAGES) - 1}/{len(PACKAGES)}"
    assert upstream.seen(PACKAGES_PATH)[0]["range"] == "bytes=9-"


def test_a_miss_never_forwards_range_or_conditionals(proxy: Proxy, upstream: Upstream) -> None:
    status, _, body = proxy.get(DEB_PATH, headers={"Range": "bytes=10-", "If-None-Match": '"d1"'})
    assert (status, body) == (200, DEB)  # the whole file, which is now cached
    [seen] = upstream.seen(DEB_PATH)
    assert "range" not in seen
    assert "if-none-match" not in seen
    assert proxy.entry(DEB_PATH).read_bytes() == DEB


# -- refusals and errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org/debian/pool/main/h/hello/hello.deb",
        "http://127.0.0.1:1/debian/dists/bookworm/InRelease",  # allowed host, other port
        "http://deb.debian.org:8080/debian/dists/bookworm/InRelease",
        "ftp://deb.debian.org/debian/dists/bookworm/InRelease",
    ],
)
def test_disallowed_targets_get_403(proxy: Proxy, upstream: Upstream, url: str) -> None:
    status, headers, body = proxy.request(url)
    assert status == 403
    assert headers["x-cache"] == "DENY"
    assert b"Traceback" not in body
    assert sum(upstream.hits.values()) == 0


def test_connect_is_refused_with_405(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"CONNECT deb.debian.org:443 HTTP/1.1\r\nHost: deb.debian.org:443\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 405 ")
    assert b"Allow: GET, HEAD" in data


def test_unreachable_upstream_gives_a_short_502(tmp_path: Path, upstream: Upstream) -> None:
    dead = free_port()
    server = aptcache.make_server("127.0.0.1", 0, tmp_path / "c", allow=[f"127.0.0.1:{dead}"])
    with serving(server):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", f"http://127.0.0.1:{dead}{DEB_PATH}")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    assert resp.status == 502
    assert body.startswith(b"upstream error: 127.0.0.1:")
    assert b"Traceback" not in body
    assert len(body) < 200


def test_non_proxy_requests_get_404(proxy: Proxy) -> None:
    status, _, body = proxy.request("/debian/dists/bookworm/InRelease")
    assert status == 404
    assert b"apt proxy" in body


def test_health_endpoint_reports_entries_and_bytes(proxy: Proxy) -> None:
    status, headers, body = proxy.request(aptcache.HEALTH_PATH)
    assert status == 200
    assert headers["content-type"] == "application/json"
    data = json.loads(body)
    assert (data["service"], data["entries"], data["bytes"]) == ("xnat-fleet-aptcache", 0, 0)
    assert data["cache_dir"] == str(proxy.cache_dir)
    proxy.get(DEB_PATH)
    proxy.get(PACKAGES_PATH)
    data = json.loads(proxy.request(aptcache.HEALTH_PATH)[2])
    assert (data["entries"], data["bytes"]) == (1, len(DEB))
    assert data["pid"] == os.getpid()


def test_one_log_line_per_request(proxy: Proxy, upstream: Upstream, caplog: Any) -> None:
    caplog.set_level("INFO", logger="xnat_fleet.aptcache")
    proxy.get(DEB_PATH)
    proxy.get(DEB_PATH)
    proxy.get(PACKAGES_PATH)
    time.sleep(0.1)  # the handler thread logs after the response is complete
    lines = [r.getMessage() for r in caplog.records if r.name == "xnat_fleet.aptcache"]
    url = upstream.base + DEB_PATH
    assert f"127.0.0.1 GET {url} MISS 200 {len(DEB)}" in lines
    assert f"127.0.0.1 GET {url} HIT 200 {len(DEB)}" in lines
    assert f"127.0.0.1 GET {upstream.base}{PACKAGES_PATH} PASS 200 {len(PACKAGES)}" in lines


def test_default_allow_list_and_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = aptcache.Config.build()
    assert config.allow == {("deb.debian.org", 80), ("security.debian.org", 80)}
    monkeypatch.setenv(aptcache.CACHE_ENV, str(tmp_path / "env-cache"))
    assert aptcache.default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv(aptcache.CACHE_ENV)
    assert aptcache.default_cache_dir() == Path.home() / ".cache" / "xnat-fleet" / "apt"


def test_unsafe_paths_are_not_cache_keys(tmp_path: Path) -> None:
    cache = aptcache.Cache(tmp_path)
    assert cache.key_path("deb.debian.org", 80, "/debian/../../etc/x.deb") is None
    assert cache.key_path("deb.debian.org", 80, "/debian/%2e%2e/x.deb") is None
    assert cache.key_path("deb.debian.org", 80, "/debian/a%2Fb.deb") is None
    assert cache.key_path("deb.debian.org", 80, "/debian/dists/bookworm/InRelease") is None
    key = cache.key_path("deb.debian.org", 80, "/debian/pool/main/a/apt/apt_2.6.1%2bx_amd64.deb")
    assert key == tmp_path / "debs/deb.debian.org/debian/pool/main/a/apt/apt_2.6.1+x_amd64.deb"


# -- ensure / stop --------------------------------------------------------------------------------


def serving_processes(cache: Path) -> list[int]:
    """Pids of proxy processes using this cache directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"xnat_fleet.aptcache" in argv and str(cache).encode() in argv:
                pids.append(int(proc.name))
    return pids


def test_ensure_twice_is_one_process_and_stop_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    cache = tmp_path / "cache"
    spawned: list[list[str]] = []
    real_popen = subprocess.Popen

    def counting_popen(cmd: list[str], **kw: Any) -> Any:
        if "xnat_fleet.aptcache" in cmd:
            spawned.append(cmd)
        return real_popen(cmd, **kw)

    monkeypatch.setattr(subprocess, "Popen", counting_popen)
    try:
        url = aptcache.ensure(port=port, bind="127.0.0.1", cache_dir=cache)
        pid = aptcache.health(port, "127.0.0.1")["pid"]
        again = aptcache.ensure(port=port, bind="127.0.0.1", cache_dir=cache)
        assert url == again == f"http://127.0.0.1:{port}/"
        assert len(spawned) == 1  # the second ensure found it answering
        assert aptcache.health(port, "127.0.0.1")["pid"] == pid  # not restarted
        assert serving_processes(cache) == [pid]
        assert pid != os.getpid()
        assert (cache / f"aptcache-{port}.pid").read_text().strip() == str(pid)
        log = (cache / f"aptcache-{port}.log").read_text()
        assert log.count("listening on") == 1
    finally:
        stopped = aptcache.stop(port=port, bind="127.0.0.1", cache_dir=cache)
    assert stopped == pid
    assert aptcache.health(port, "127.0.0.1") is None
    assert not Path(f"/proc/{pid}").exists()
    assert serving_processes(cache) == []
    assert not (cache / f"aptcache-{port}.pid").exists()
    assert aptcache.stop(port=port, bind="127.0.0.1", cache_dir=cache) is None


def test_ensure_refuses_a_port_held_by_something_else(tmp_path: Path, upstream: Upstream) -> None:
    with pytest.raises(aptcache.AptCacheError, match="not the xnat-fleet apt cache"):
        aptcache.ensure(port=upstream.port, bind="127.0.0.1", cache_dir=tmp_path)
    assert not (tmp_path / f"aptcache-{upstream.port}.pid").exists()


def test_cli_ensure_status_stop(tmp_path: Path) -> None:
    port = free_port()
    base = [sys.executable, "-m", "xnat_fleet.aptcache"]
    opts = ["--port", str(port), "--bind", "127.0.0.1", "--cache-dir", str(tmp_path)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args, *opts], capture_output=True, text=True, timeout=60)

    try:
        ensured = run("ensure")
        assert (ensured.returncode, ensured.stdout) == (0, f"http://127.0.0.1:{port}/\n")
        status = run("status")
        assert status.returncode == 0
        assert json.loads(status.stdout)["cache_dir"] == str(tmp_path)
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0
    assert stopped.stdout.startswith("stopped pid ")
    assert run("status").returncode == 1
