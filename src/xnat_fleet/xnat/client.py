"""One HTTP client for XNAT's REST API, fail-closed.

- Session login (``POST /data/JSESSION`` with Basic auth, then the ``JSESSIONID`` cookie) or plain
  Basic auth with an alias token (``alias:secret``) where a service needs one (docs/xnat-api.md §6).
- Every status the caller did not declare acceptable raises :class:`XnatHTTPError`, naming the
  method, path and status, with the first lines of the body; every secret the client knows is
  scrubbed from that message (docs/xnat-api.md §6 "Fail-closed rules").
- A JSON endpoint answering 200 with ``text/html`` is XNAT's setup or login page (uninitialised
  site, persisted volume, wrong password): :class:`XnatSetupPageError`, never success (§6, §18).
- Retries only on connection errors and 502/503/504, with exponential backoff.
- TLS is verified against the study CA (``ca_file``) by default; plain ``http://`` is accepted only
  for loopback addresses (the tests' stand-in and the demo).
"""

from __future__ import annotations

import ipaddress
import json as jsonlib
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests

RETRY_STATUSES = frozenset({502, 503, 504})
OK_STATUSES: tuple[int, ...] = (200, 201, 202, 204)
SCRUBBED = "********"


class XnatError(Exception):
    """Any failure talking to XNAT. ``str()`` never contains a secret."""


class XnatConnectionError(XnatError):
    """XNAT could not be reached (after retries)."""


class XnatHTTPError(XnatError):
    """XNAT answered with a status the caller did not accept."""

    def __init__(self, method: str, path: str, status: int, excerpt: str, url: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.excerpt = excerpt
        self.url = url
        detail = f": {excerpt}" if excerpt else ""
        super().__init__(f"{method} {path} answered HTTP {status} ({url}){detail}")


class XnatAuthError(XnatHTTPError):
    """401: wrong credentials, a rotated password, a disabled account or an expired alias token."""


class XnatSetupPageError(XnatHTTPError):
    """200 with HTML where JSON was expected: XNAT's setup/login page (docs/xnat-api.md §6)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced (longest first, so no secret is left half-masked)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, SCRUBBED)
    return text


def seg(value: str | int) -> str:
    """One URL path segment, percent-encoded (usernames, project ids, AE titles)."""
    return quote(str(value), safe="")


class XnatClient:
    """A logged-in conversation with one XNAT as one account."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        ca_file: str | None = None,
        verify: bool = True,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        secrets: Iterable[str] = (),
        use_session: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise XnatError(f"XNAT URL {url!r} is not an http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise XnatError(
                f"XNAT URL {url!r}: plain http is allowed only on loopback (tests, demo); use https"
            )
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._use_session = use_session
        self._logged_in = False
        self._secrets: set[str] = {s for s in (password, *secrets) if s}
        self._http = requests.Session()
        self._http.verify = ca_file if (verify and ca_file) else verify
        self._http.headers["User-Agent"] = "xnat-fleet"
        self._ca_file = ca_file
        self._verify = verify

    # -- secrets -----------------------------------------------------------------------------
    def add_secret(self, *values: str) -> None:
        """Register more values to scrub from every message (alias secrets, other passwords)."""
        self._secrets.update(v for v in values if v)

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def as_user(self, username: str, password: str, *, use_session: bool = True) -> XnatClient:
        """A new client for the same XNAT as another account (same TLS settings)."""
        other = XnatClient(
            self.url,
            username,
            password,
            ca_file=self._ca_file,
            verify=self._verify,
            timeout=self._timeout,
            retries=self._retries,
            backoff=self._backoff,
            secrets=self._secrets,
            use_session=use_session,
        )
        return other

    # -- transport ---------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.url + path
        attempt = 0
        while True:
            try:
                # verify given per request: requests would otherwise let REQUESTS_CA_BUNDLE /
                # CURL_CA_BUNDLE from the environment replace the study CA.
                response = self._http.request(
                    method, url, timeout=self._timeout, verify=self._http.verify, **kwargs
                )
            except requests.exceptions.SSLError as exc:
                raise XnatConnectionError(
                    self.scrub(f"{method} {path}: TLS verification failed for {self.url}: {exc}")
                ) from None
            except requests.exceptions.RequestException as exc:
                if attempt >= self._retries:
                    raise XnatConnectionError(
                        self.scrub(
                            f"{method} {path}: cannot reach {self.url} after "
                            f"{attempt + 1} attempts: {exc.__class__.__name__}"
                        )
                    ) from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self._retries:
                    return response
            time.sleep(self._backoff * (2**attempt))
            attempt += 1

    def login(self) -> None:
        """Open a session: ``POST /data/JSESSION`` with Basic auth sets JSESSIONID (§6)."""
        response = self._send("POST", "/data/JSESSION", auth=(self.username, self._password))
        self._check("POST", "/data/JSESSION", response, OK_STATUSES, expect=None)
        self._logged_in = True

    def close(self) -> None:
        self._http.close()

    def _excerpt(self, response: requests.Response) -> str:
        lines = [line.strip() for line in response.text.splitlines() if line.strip()][:3]
        return self.scrub(" | ".join(lines))[:300]

    def _check(
        self,
        method: str,
        path: str,
        response: requests.Response,
        ok: Iterable[int],
        expect: str | None,
    ) -> requests.Response:
        status = response.status_code
        if status not in tuple(ok):
            cls = XnatAuthError if status == 401 else XnatHTTPError
            raise cls(method, path, status, self._excerpt(response), self.url)
        ctype = response.headers.get("Content-Type", "")
        if status == 200 and expect == "json" and "text/html" in ctype:
            raise XnatSetupPageError(
                method,
                path,
                status,
                "an HTML page where JSON was expected: XNAT's setup or login page "
                "(not initialised, or the credentials were not accepted)",
                self.url,
            )
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        text: str | None = None,
        content_type: str | None = None,
        ok: Iterable[int] = OK_STATUSES,
        expect: str | None = None,
    ) -> requests.Response:
        """Send one request; raise unless the status is in ``ok``.

        ``json`` sends a JSON body (``content_type`` may override the header, e.g. ``text/plain``
        for Xsync's older controllers, docs/xnat-api.md §16.4); ``text`` sends a raw body
        (``text/plain`` unless ``content_type`` says otherwise). ``expect="json"`` turns an HTML
        answer into :class:`XnatSetupPageError`.
        """
        if self._use_session and not self._logged_in:
            self.login()
        headers: dict[str, str] = {}
        data: bytes | None = None
        if json is not None:
            data = jsonlib.dumps(json).encode()
            headers["Content-Type"] = content_type or "application/json"
        elif text is not None:
            data = text.encode()
            headers["Content-Type"] = content_type or "text/plain"
        if expect == "json":
            headers["Accept"] = "application/json"
        auth = None if self._use_session else (self.username, self._password)
        response = self._send(method, path, params=params, data=data, headers=headers, auth=auth)
        if response.status_code == 401 and self._use_session and self._logged_in:
            # The session may have timed out (sessionTimeout, §7): log in again once.
            self._logged_in = False
            self.login()
            response = self._send(method, path, params=params, data=data, headers=headers)
        return self._check(method, path, response, ok, expect)

    # -- conveniences ------------------------------------------------------------------------
    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        ok: Iterable[int] = (200,),
        allow_empty: bool = False,
    ) -> Any:
        """The JSON body of a GET; None for an accepted status other than 200, and with
        ``allow_empty`` for a 200 with an empty body (XNAT writes a null result that way)."""
        response = self.request("GET", path, params=params, ok=ok, expect="json")
        if response.status_code != 200:
            return None
        if allow_empty and not response.text.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise XnatHTTPError(
                "GET", path, response.status_code, "the body is not JSON", self.url
            ) from None

    def get_text(self, path: str, *, ok: Iterable[int] = (200,)) -> str | None:
        response = self.request("GET", path, ok=ok)
        if response.status_code != 200:
            return None
        return response.text
