"""A host-side caching HTTP proxy for Debian packages (``python -m xnat_fleet.aptcache``).

Test and lab containers point apt at it (``Acquire::http::Proxy "http://HOST:3142/";``) so every
``.deb`` is downloaded once per machine. It is a forward proxy for plain-http GET and HEAD
requests to an allow-list of hosts (``deb.debian.org`` and ``security.debian.org`` unless
extended); anything else gets 403 and CONNECT gets 405, so it is never an open proxy.

``.deb`` (and ``.udeb``) files are immutable by name: they are cached under the cache directory,
keyed by host and path, each with a sidecar recording size and sha256. A download streams to the
client and to a temp file in the entry's directory at once; only a complete one (upstream 200,
Content-Length matched) is renamed into place. Every cached file is checked against its sidecar
before it is served; a mismatch, a missing sidecar or a truncated file is deleted and fetched
again. Everything else (InRelease, Packages, by-hash, ...) is passed through uncached with the
upstream status and headers, conditional and Range request headers forwarded.

``GET /xnat-fleet-aptcache`` (origin form, no host) is the health endpoint: a short JSON object
that ``ensure`` uses to recognise this proxy on the port.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from xnat_fleet.errors import FleetError

CACHE_ENV = "XNAT_FLEET_APT_CACHE"
DEFAULT_PORT = 3142
DEFAULT_BIND = "0.0.0.0"  # noqa: S104 - containers reach it through the host's bridge address
DEFAULT_ALLOW = ("deb.debian.org", "security.debian.org")
HEALTH_PATH = "/xnat-fleet-aptcache"
SERVICE = "xnat-fleet-aptcache"
CHUNK = 1 << 16
UPSTREAM_TIMEOUT = 60.0
CLIENT_TIMEOUT = 300.0
CACHED_SUFFIXES = (".deb", ".udeb")
ENTRIES_DIR = "debs"
SIDECAR_SUFFIX = ".meta"
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".part"
# A cache path segment: no leading dot (so no "..", no hidden or temp names), no separators.
SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_+~][A-Za-z0-9._+~:=-]{0,199}")
# Request headers forwarded upstream for pass-through requests (cached ones forward only
# User-Agent: a cache entry is always the whole file).
FORWARD_REQUEST_HEADERS = (
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Cache-Control",
    "Pragma",
    "If-Modified-Since",
    "If-None-Match",
    "If-Unmodified-Since",
    "If-Match",
    "If-Range",
    "Range",
)
# Response headers passed back to the client (never hop-by-hop ones).
FORWARD_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Encoding",
    "Content-Range",
    "Accept-Ranges",
    "Last-Modified",
    "ETag",
    "Cache-Control",
    "Expires",
    "Age",
    "Date",
    "Location",
)

log = logging.getLogger("xnat_fleet.aptcache")


class AptCacheError(FleetError):
    """The apt cache cannot be started, or something else holds its port."""


# -- configuration --------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$XNAT_FLEET_APT_CACHE``, else ``~/.cache/xnat-fleet/apt``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "xnat-fleet" / "apt"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()).expanduser()


def parse_allow(entry: str) -> tuple[str, int]:
    """``HOST`` (port 80), ``HOST:PORT`` or ``[V6]:PORT`` -> (lower-case host, port)."""
    try:
        parts = urllib.parse.urlsplit("//" + entry.strip())
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise AptCacheError(f"allow-list entry {entry!r}: {exc}") from None
    if not host or parts.path or parts.username is not None:
        raise AptCacheError(f"allow-list entry {entry!r}: expected HOST or HOST:PORT")
    return host.lower(), port or 80


@dataclass(frozen=True)
class Config:
    cache_dir: Path
    allow: frozenset[tuple[str, int]]

    @classmethod
    def build(
        cls, cache_dir: str | os.PathLike[str] | None = None, allow: Iterable[str] = ()
    ) -> Config:
        entries = {parse_allow(a) for a in (*DEFAULT_ALLOW, *allow)}
        return cls(resolve_cache_dir(cache_dir), frozenset(entries))


# -- the cache ------------------------------------------------------------------------------------


@dataclass
class Entry:
    """A verified cache entry: an open file holding exactly the recorded bytes."""

    file: BinaryIO
    meta: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.meta["size"])


@dataclass
class Cache:
    root: Path
    _locks: dict[Path, threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def entries_dir(self) -> Path:
        return self.root / ENTRIES_DIR

    def lock(self, path: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(path, threading.Lock())

    def key_path(self, host: str, port: int, raw_path: str) -> Path | None:
        """Where the file for ``host:port`` + ``raw_path`` lives; None when it is not cacheable."""
        if "%2f" in raw_path.lower():  # an encoded "/" would alias another path
            return None
        segments = urllib.parse.unquote(raw_path).split("/")
        if segments[0] != "" or not segments[-1].endswith(CACHED_SUFFIXES):
            return None
        if not all(SAFE_SEGMENT.fullmatch(s) for s in segments[1:]):
            return None
        host_dir = host if port == 80 else f"{host}_{port}"
        if not SAFE_SEGMENT.fullmatch(host_dir.replace(":", "_")):
            return None
        return self.entries_dir.joinpath(host_dir.replace(":", "_"), *segments[1:])

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + SIDECAR_SUFFIX)

    def clean_temp_files(self) -> int:
        """Delete the temp files of downloads that were killed; returns how many."""
        removed = 0
        for path in self._walk():
            if path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def stats(self) -> tuple[int, int]:
        """(number of entries, bytes in them)."""
        count = size = 0
        for path in self._walk():
            if path.name.endswith(CACHED_SUFFIXES) and not path.name.startswith("."):
                with contextlib.suppress(OSError):
                    size += path.stat().st_size
                    count += 1
        return count, size

    def _walk(self) -> Iterator[Path]:
        for dirpath, _dirs, files in os.walk(self.entries_dir):
            for name in files:
                yield Path(dirpath) / name

    def lookup(self, path: Path) -> tuple[Entry | None, str]:
        """The verified entry at ``path``, or None and why it was not usable (deleted if bad)."""
        with self.lock(path):
            sidecar = self.sidecar(path)
            try:
                file = path.open("rb")
            except FileNotFoundError:
                with contextlib.suppress(OSError):
                    sidecar.unlink()
                return None, "absent"
            try:
                meta = json.loads(sidecar.read_text())
                if not isinstance(meta, dict):
                    raise ValueError("not an object")
                int(meta["size"])
                str(meta["sha256"])
            except FileNotFoundError:
                meta = None
                reason = "sidecar missing"
            except (OSError, ValueError, KeyError, TypeError) as exc:
                meta = None
                reason = f"sidecar unreadable ({exc.__class__.__name__})"
        if meta is None:
            self._discard(path, file)
            return None, reason
        reason = self._verify(file, meta)
        if reason:
            self._discard(path, file)
            return None, reason
        file.seek(0)
        return Entry(file, meta), "verified"

    @staticmethod
    def _verify(file: BinaryIO, meta: dict[str, Any]) -> str:
        size = os.fstat(file.fileno()).st_size
        if size != int(meta["size"]):
            return f"size {size} != recorded {meta['size']}"
        digest = hashlib.sha256()
        while chunk := file.read(1 << 20):
            digest.update(chunk)
        if digest.hexdigest() != meta["sha256"]:
            return "sha256 mismatch"
        return ""

    def _discard(self, path: Path, file: BinaryIO) -> None:
        """Delete the entry ``file`` was opened from, unless it was replaced in the meantime."""
        with self.lock(path), contextlib.suppress(OSError):
            ino = os.fstat(file.fileno()).st_ino
            if path.stat().st_ino == ino:
                path.unlink()
                self.sidecar(path).unlink(missing_ok=True)
        file.close()

    def new_temp(self, path: Path) -> tuple[BinaryIO, Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
        return os.fdopen(fd, "wb"), Path(name)

    def commit(self, path: Path, temp: Path, meta: dict[str, Any]) -> None:
        """Rename a complete download into place with its sidecar (sidecar first)."""
        fd, side_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
        side_temp = Path(side_name)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(meta, out, indent=1, sort_keys=True)
                out.write("\n")
            with self.lock(path):
                side_temp.replace(self.sidecar(path))
                temp.replace(path)
        finally:
            side_temp.unlink(missing_ok=True)


# -- the proxy ------------------------------------------------------------------------------------


class ClientGone(Exception):
    """Writing to the client failed: it closed the connection."""


class UpstreamError(Exception):
    """Upstream could not be reached or did not answer with a valid HTTP response."""


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], config: Config) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.config = config
        self.cache = Cache(config.cache_dir)
        config.cache_dir.mkdir(parents=True, exist_ok=True)
        removed = self.cache.clean_temp_files()
        if removed:
            log.info("removed %d temp file(s) of interrupted downloads", removed)
        super().__init__(address, ProxyHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        log.warning("connection from %s ended: %r", client_address[0], exc)

    def health(self) -> dict[str, Any]:
        entries, size = self.cache.stats()
        return {
            "service": SERVICE,
            "pid": os.getpid(),
            "port": self.port,
            "cache_dir": str(self.config.cache_dir),
            "entries": entries,
            "bytes": size,
            "allow": sorted(f"{h}:{p}" for h, p in self.config.allow),
        }


class ProxyHandler(BaseHTTPRequestHandler):
    server: ProxyServer
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT
    server_version = "xnat-fleet-aptcache"

    def setup(self) -> None:
        super().setup()
        self._upstreams: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def finish(self) -> None:
        for conn in self._upstreams.values():
            conn.close()
        with contextlib.suppress(OSError):
            super().finish()

    # BaseHTTPRequestHandler's own request log is replaced by one line per request (_dispatch).
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("%s %s", self.client_address[0], format % args)

    # -- dispatch -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(self._route)

    def do_HEAD(self) -> None:
        self._dispatch(self._route)

    def do_CONNECT(self) -> None:
        self._dispatch(self._refuse_method)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT

    def _refuse_method(self) -> None:
        self.close_connection = True  # a body we do not read may follow
        self._reply(405, f"method {self.command} not supported", "DENY", {"Allow": "GET, HEAD"})

    def _dispatch(self, handle: Callable[[], None]) -> None:
        self._sent_headers = False
        self._status = 0
        self._bytes = 0
        self._label = "ERR"
        try:
            handle()
        except ClientGone:
            self.close_connection = True
        except Exception as exc:  # never a traceback to the client
            log.exception(
                "%s %s %s: internal error", self.client_address[0], self.command, self.path
            )
            if self._sent_headers:
                self.close_connection = True
            else:
                self._reply(502, f"proxy error: {exc.__class__.__name__}", "ERR")
        finally:
            log.info(
                "%s %s %s %s %s %d",
                self.client_address[0],
                self.command,
                self.path,
                self._label,
                self._status or "-",
                self._bytes,
            )

    def _route(self) -> None:
        if self.path.split("?", 1)[0] == HEALTH_PATH:
            body = json.dumps(self.server.health()).encode() + b"\n"
            self._reply_bytes(200, body, "HEALTH", "application/json")
            return
        if self.path.startswith("/"):
            self._reply(404, "this is an apt proxy: ask for absolute http:// URLs", "DENY")
            return
        try:
            url = urllib.parse.urlsplit(self.path)
            host, port = (url.hostname or "").lower(), url.port or 80
        except ValueError:
            self._reply(400, "malformed URL", "DENY")
            return
        if url.scheme != "http" or not host or url.username is not None:
            self._reply(403, "only plain http:// URLs of allowed hosts are proxied", "DENY")
            return
        if (host, port) not in self.server.config.allow:
            self._reply(403, f"host {host}:{port} is not in the allow-list", "DENY")
            return
        target = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
        key = None if url.query else self.server.cache.key_path(host, port, url.path)
        if key is not None:
            try:
                entry, reason = self.server.cache.lookup(key)
            except OSError as exc:  # e.g. a file where a directory should be: just don't cache
                log.warning("cache lookup %s: %s", key, exc)
                key, entry, reason = None, None, ""
            if entry is not None:
                self._serve_hit(entry)
                return
            if reason not in ("absent", ""):
                log.warning("discarded cache entry %s: %s", key, reason)
            if key is not None and self.command == "GET":
                self._fetch_and_cache(host, port, target, key)
                return
        self._pass_through(host, port, target)

    # -- responses ------------------------------------------------------------------------------

    def _start(self, status: int, headers: Sequence[tuple[str, str]], label: str) -> None:
        self._label = label
        self._status = status
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("X-Cache", label)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
        except OSError as exc:
            raise ClientGone from exc
        self._sent_headers = True

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:
            raise ClientGone from exc
        self._bytes += len(data)

    def _reply_bytes(self, status: int, body: bytes, label: str, ctype: str) -> None:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        self._start(status, headers, label)
        if self.command != "HEAD":
            self._write(body)

    def _reply(
        self, status: int, text: str, label: str, extra: dict[str, str] | None = None
    ) -> None:
        body = (text + "\n").encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        headers += list((extra or {}).items())
        self._start(status, headers, label)
        if self.command != "HEAD":
            self._write(body)

    def _serve_hit(self, entry: Entry) -> None:
        with entry.file:
            meta, size = entry.meta, entry.size
            headers = [
                ("Content-Type", str(meta.get("content_type") or "application/octet-stream")),
                ("Accept-Ranges", "bytes"),
            ]
            headers += [
                (h, str(meta[k]))
                for h, k in (("Last-Modified", "last_modified"), ("ETag", "etag"))
                if meta.get(k)
            ]
            span = self._requested_range(size)
            if span is None:
                start, end, status = 0, size, 200
                headers.append(("Content-Length", str(size)))
            else:
                start, end, status = span[0], span[1], 206
                headers.append(("Content-Length", str(end - start)))
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
            self._start(status, headers, "HIT")
            if self.command == "HEAD":
                return
            entry.file.seek(start)
            left = end - start
            while left > 0:
                chunk = entry.file.read(min(CHUNK, left))
                if not chunk:  # shrank under us since verification: the client sees a short body
                    self.close_connection = True
                    return
                self._write(chunk)
                left -= len(chunk)

    def _requested_range(self, size: int) -> tuple[int, int] | None:
        """A single satisfiable ``bytes=`` range as (start, end-exclusive); else None (send all)."""
        value = self.headers.get("Range")
        if not value or self.headers.get("If-Range") or size == 0:
            return None
        match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
        if not match or match.group(1) == match.group(2) == "":
            return None
        first, last = match.group(1), match.group(2)
        if first == "":
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
        if start >= size or start >= end:
            return None
        return start, end

    # -- upstream -------------------------------------------------------------------------------

    def _upstream(
        self, host: str, port: int, target: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the request upstream (reusing this client's connection once) and read the head."""
        headers = {"Host": host if port == 80 else f"{host}:{port}", **headers}
        for attempt in (1, 2):
            conn = self._upstreams.get((host, port))
            reused = conn is not None and conn.sock is not None
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
                self._upstreams[(host, port)] = conn
            try:
                conn.request(self.command, target, headers=headers)
                return conn, conn.getresponse()
            except (ConnectionError, http.client.BadStatusLine) as exc:
                conn.close()
                if reused and attempt == 1:
                    continue  # the kept-alive connection went away: one fresh try
                raise UpstreamError(f"{host}:{port}: {exc.__class__.__name__}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise UpstreamError(f"{host}:{port}: {reason or exc.__class__.__name__}") from exc
        raise AssertionError("unreachable")

    def _upstream_or_502(
        self, host: str, port: int, target: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None:
        try:
            return self._upstream(host, port, target, headers)
        except UpstreamError as exc:
            self._reply(502, f"upstream error: {exc}", "ERR")
            return None

    def _forward_headers(self, names: Iterable[str]) -> dict[str, str]:
        return {n: v for n in names if (v := self.headers.get(n)) is not None}

    @staticmethod
    def _response_headers(resp: http.client.HTTPResponse) -> list[tuple[str, str]]:
        return [(n, v) for n in FORWARD_RESPONSE_HEADERS if (v := resp.getheader(n)) is not None]

    def _pass_through(self, host: str, port: int, target: str) -> None:
        got = self._upstream_or_502(
            host, port, target, self._forward_headers(FORWARD_REQUEST_HEADERS)
        )
        if got is None:
            return
        conn, resp = got
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        length = resp.getheader("Content-Length")
        if not no_body and (length is None or not length.isdigit()):
            self.close_connection = True  # delimited by closing, as we do not re-chunk
        self._start(resp.status, self._response_headers(resp), "PASS")
        if no_body:
            resp.close()
            return
        expected = int(length) if length is not None and length.isdigit() else None
        got_bytes = 0
        try:
            while chunk := resp.read(CHUNK):
                got_bytes += len(chunk)
                self._write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("upstream %s:%s%s broke off: %r", host, port, target, exc)
            expected = -1
        finally:
            if expected is not None and got_bytes != expected:
                conn.close()
                self.close_connection = True
            resp.close()

    def _fetch_and_cache(self, host: str, port: int, target: str, key: Path) -> None:
        headers = self._forward_headers(("User-Agent",))
        headers["Accept-Encoding"] = "identity"
        got = self._upstream_or_502(host, port, target, headers)
        if got is None:
            return
        conn, resp = got
        length = resp.getheader("Content-Length")
        encoding = (resp.getheader("Content-Encoding") or "identity").lower()
        if resp.status != 200 or length is None or not length.isdigit() or encoding != "identity":
            self._relay_uncached(conn, resp, length)
            return
        expected = int(length)
        temp: BinaryIO | None = None
        temp_path: Path | None = None
        try:
            temp, temp_path = self.server.cache.new_temp(key)
        except OSError as exc:
            log.warning("cannot cache %s: %s", key, exc)
        self._start(200, self._response_headers(resp), "MISS")
        digest = hashlib.sha256()
        received = 0
        client_gone = False
        try:
            while received < expected:
                try:
                    chunk = resp.read(min(CHUNK, expected - received))
                except (OSError, http.client.HTTPException) as exc:
                    log.warning("upstream %s:%s%s broke off: %r", host, port, target, exc)
                    break
                if not chunk:
                    break
                received += len(chunk)
                digest.update(chunk)
                if temp is not None:
                    try:
                        temp.write(chunk)
                    except OSError as exc:
                        log.warning("cannot cache %s: %s", key, exc)
                        temp.close()
                        temp = None
                if received == expected and temp is not None and temp_path is not None:
                    # complete: commit before the last bytes go out, so that a client that has
                    # the whole file finds it cached on its next request
                    temp.close()
                    temp = None
                    url = f"http://{host}{'' if port == 80 else f':{port}'}{target}"
                    self._commit(key, temp_path, resp, expected, digest.hexdigest(), url)
                    temp_path = None
                if not client_gone:
                    try:
                        self._write(chunk)
                    except ClientGone:
                        # keep downloading: the client's retry (or the next one) is a HIT
                        client_gone = True
                        self.close_connection = True
            if received != expected:
                log.warning(
                    "upstream %s:%s%s ended after %d of %d bytes: not cached",
                    host,
                    port,
                    target,
                    received,
                    expected,
                )
                conn.close()
                self.close_connection = True
        finally:
            resp.close()
            if temp is not None:
                temp.close()
            if temp_path is not None:
                temp_path.unlink(missing_ok=True)
        if client_gone:
            raise ClientGone

    def _commit(
        self,
        key: Path,
        temp_path: Path,
        resp: http.client.HTTPResponse,
        size: int,
        sha256: str,
        url: str,
    ) -> None:
        meta = {
            "url": url,
            "size": size,
            "sha256": sha256,
            "last_modified": resp.getheader("Last-Modified"),
            "etag": resp.getheader("ETag"),
            "content_type": resp.getheader("Content-Type"),
            "stored": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            self.server.cache.commit(key, temp_path, meta)
        except OSError as exc:
            log.warning("cannot cache %s: %s", key, exc)

    def _relay_uncached(
        self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, length: str | None
    ) -> None:
        """A ``.deb`` answer we do not cache (404, no Content-Length, ...): relay it as is."""
        no_body = resp.status in (204, 304) or resp.status < 200
        if not no_body and (length is None or not length.isdigit()):
            self.close_connection = True
        self._start(resp.status, self._response_headers(resp), "PASS")
        if no_body:
            resp.close()
            return
        received = 0
        try:
            while chunk := resp.read(CHUNK):
                received += len(chunk)
                self._write(chunk)
        except (OSError, http.client.HTTPException):
            received = -1
        finally:
            if length is not None and length.isdigit() and received != int(length):
                conn.close()
                self.close_connection = True
            resp.close()


# -- running it -----------------------------------------------------------------------------------


def make_server(
    bind: str = DEFAULT_BIND,
    port: int = DEFAULT_PORT,
    cache_dir: str | os.PathLike[str] | None = None,
    allow: Iterable[str] = (),
) -> ProxyServer:
    """A bound proxy (port 0: any free port); call ``serve_forever`` on it."""
    return ProxyServer((bind, port), Config.build(cache_dir, allow))


def pid_file(cache_dir: Path, port: int) -> Path:
    return cache_dir / f"aptcache-{port}.pid"


def log_file(cache_dir: Path, port: int) -> Path:
    return cache_dir / f"aptcache-{port}.log"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(
    bind: str = DEFAULT_BIND,
    port: int = DEFAULT_PORT,
    cache_dir: str | os.PathLike[str] | None = None,
    allow: Iterable[str] = (),
) -> None:
    """Run the proxy in the foreground until SIGTERM or Ctrl-C; a pid file while it runs."""
    try:
        server = make_server(bind, port, cache_dir, allow)
    except OSError as exc:
        raise AptCacheError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    pidf = pid_file(server.config.cache_dir, server.port)
    pidf.write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, _terminate)
    log.info(
        "listening on %s:%d, cache %s, allowed %s",
        bind,
        server.port,
        server.config.cache_dir,
        ", ".join(server.health()["allow"]),
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        with contextlib.suppress(OSError):
            if pidf.read_text().strip() == str(os.getpid()):
                pidf.unlink()
        log.info("stopped")


def _probe_host(bind: str) -> str:
    if bind in ("", "0.0.0.0"):  # noqa: S104
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def _url(bind: str, port: int) -> str:
    host = f"[{bind}]" if ":" in bind else bind
    return f"http://{host}:{port}/"


def health(port: int = DEFAULT_PORT, bind: str = DEFAULT_BIND, timeout: float = 5.0) -> Any:
    """The health JSON of what answers on the port; None if nothing listens.

    Raises AptCacheError when something answers that is not this proxy.
    """
    host = _probe_host(bind)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", HEALTH_PATH)
        resp = conn.getresponse()
        body = resp.read(1 << 16)
    except ConnectionRefusedError:
        return None
    except (OSError, http.client.HTTPException) as exc:
        raise AptCacheError(
            f"{host}:{port} is held by something that is not the xnat-fleet apt cache ({exc!r})"
        ) from None
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if resp.status != 200 or not isinstance(data, dict) or data.get("service") != SERVICE:
        raise AptCacheError(
            f"{host}:{port} is held by something that is not the xnat-fleet apt cache "
            f"(GET {HEALTH_PATH} answered {resp.status})"
        )
    return data


_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def ensure(
    port: int = DEFAULT_PORT,
    bind: str = DEFAULT_BIND,
    cache_dir: str | os.PathLike[str] | None = None,
    allow: Iterable[str] = (),
    timeout: float = 15.0,
) -> str:
    """Start the proxy in the background unless it already answers on the port; its URL.

    The URL is ``http://BIND:PORT/`` (with the default bind 0.0.0.0 the caller substitutes the
    address its containers reach the host on).
    """
    url = _url(bind, port)
    cdir = resolve_cache_dir(cache_dir)
    cdir.mkdir(parents=True, exist_ok=True)
    with (cdir / "aptcache.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = health(port, bind)
        if running is not None:
            if cache_dir is not None and Path(running["cache_dir"]) != cdir:
                raise AptCacheError(
                    f"the apt cache on port {port} uses {running['cache_dir']}, not {cdir}"
                )
            return url
        cmd = [sys.executable, "-m", "xnat_fleet.aptcache", "serve", "--bind", bind]
        cmd += ["--port", str(port), "--cache-dir", str(cdir)]
        for entry in allow:
            cmd += ["--allow", entry]
        logf = log_file(cdir, port)
        with logf.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own module, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd="/",
            )
        _SPAWNED[proc.pid] = proc
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(AptCacheError):  # still starting up
                answered = health(port, bind, timeout=1.0)
                if answered is not None:
                    if answered["pid"] != proc.pid and proc.poll() is None:
                        # another start won the port: ours must not bind it once that one stops
                        proc.terminate()
                        proc.wait(timeout)
                        _SPAWNED.pop(proc.pid, None)
                    return url
            if proc.poll() is not None:
                _SPAWNED.pop(proc.pid, None)
                tail = logf.read_text(errors="replace").strip().splitlines()[-3:]
                raise AptCacheError(
                    f"the apt cache exited with {proc.returncode} at start: "
                    + (" / ".join(tail) or f"see {logf}")
                )
            if time.monotonic() > deadline:
                raise AptCacheError(f"the apt cache did not answer on port {port}; see {logf}")
            time.sleep(0.05)


def _is_ours(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"xnat_fleet.aptcache" in cmdline


def _gone(pid: int) -> bool:
    proc = _SPAWNED.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return False
        _SPAWNED.pop(pid, None)
        return True
    return not _is_ours(pid) or _state(pid) == "Z"


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[0]


def stop(
    port: int = DEFAULT_PORT,
    bind: str = DEFAULT_BIND,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> int | None:
    """Stop the proxy on the port (found through its health endpoint, else its pid file).

    Returns the pid it stopped, or None when none was running.
    """
    cdir = resolve_cache_dir(cache_dir)
    pid: int | None = None
    running = health(port, bind)
    if running is not None:
        pid = int(running["pid"])
    else:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file(cdir, port).read_text().strip())
    if pid == os.getpid():
        raise AptCacheError(f"the apt cache on port {port} runs inside this process")
    if pid is None or not _is_ours(pid):
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc = _SPAWNED.pop(pid, None)
    if proc is not None:
        proc.wait(timeout)
    with contextlib.suppress(OSError):
        if pid_file(cdir, port).read_text().strip() == str(pid):
            pid_file(cdir, port).unlink()
    return pid


# -- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xnat_fleet.aptcache",
        description="Host-side caching HTTP proxy for Debian packages (Acquire::http::Proxy).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the proxy in the foreground"),
        ("ensure", "start it in the background unless it answers; print its URL"),
        ("stop", "stop the background proxy"),
        ("status", "print the health of the proxy on the port (exit 1 when none)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--bind", default=DEFAULT_BIND, help="address (default %(default)s)")
        cmd.add_argument("--port", type=int, default=DEFAULT_PORT, help="(default %(default)s)")
        cmd.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help=f"cache directory (default ${CACHE_ENV}, else ~/.cache/xnat-fleet/apt)",
        )
        if name in ("serve", "ensure"):
            cmd.add_argument(
                "--allow",
                action="append",
                default=[],
                metavar="HOST[:PORT]",
                help="also proxy this host (repeatable; the default port is 80)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    )
    try:
        if args.command == "serve":
            serve(args.bind, args.port, args.cache_dir, args.allow)
        elif args.command == "ensure":
            print(ensure(args.port, args.bind, args.cache_dir, args.allow))
        elif args.command == "stop":
            pid = stop(args.port, args.bind, args.cache_dir)
            print(f"stopped pid {pid}" if pid else "not running")
        else:
            data = health(args.port, args.bind)
            if data is None:
                print(f"not running on port {args.port}")
                return 1
            print(json.dumps(data, indent=1))
    except AptCacheError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
