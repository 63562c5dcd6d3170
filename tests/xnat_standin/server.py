"""HTTP layer of the XNAT REST stand-in — for xnat-fleet TESTS only, this is NOT XNAT.

A stdlib ``ThreadingHTTPServer`` that serves the XNAT REST endpoints the reconcilers use, with the
status codes, content types and quirks of XNAT itself. Each behaviour cites its source: either
docs/xnat-api.md (the project's sheet) or, where the sheet was wrong, XNAT's code as
``repository path@commit``. State lives in :mod:`tests.xnat_standin.state`, which tests read and
mutate directly; version-dependent behaviour is a setting there (``STANDIN_PROFILES``). Every
response carries ``X-Standin: xnat-fleet``.

Runnable for demos: ``python -m tests.xnat_standin --port 8080 [--profile P] [--xsync]``.
"""

from __future__ import annotations

import datetime as dt
import html
import ipaddress
import json
import re
import secrets
import ssl
import threading
import xml.etree.ElementTree as ET
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import socket
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import requests

from .state import (
    DEFAULT_ANON_SCRIPT,
    INIT_REQUIRED_KEYS,
    LEVEL_BY_PATH,
    PROJECT_SYNC_STATUS_DEFAULTS,
    RECEIVER_DEFAULTS,
    SITE_CONFIG_AUTHENTICATED_KEYS,
    SITE_GROUPS,
    XSYNC_SITE_PREFS_DEFAULTS,
    AliasToken,
    Project,
    State,
    User,
    new_state,
    now_ms,
)

STANDIN_NOTICE = "XNAT REST stand-in for xnat-fleet tests — NOT XNAT"
XNAT_NS = "http://nrg.wustl.edu/xnat"
JSON = "application/json"
TEXT = "text/plain;charset=UTF-8"
HTML = "text/html;charset=UTF-8"
REMOTE_TIMEOUT = 10.0

# Source shorthands used in the comments below (full repository, path, commit):
#   MONO = NrgXnat/xnat @93d33cb (web/ = xnat-web 4fb6bc1, ~XNAT 1.8.11/1.9.0, Spring 4.3.30)
#   CS   = NrgXnat/container-service @8590cb6 (3.7.3)
#   XS   = NrgXnat/xsync (commit per file)
# Error answers: MONO web/src/main/java/org/nrg/xapi/rest/XapiRestControllerAdvice.java takes the
# status from the exception's @ResponseStatus and answers the message as text/plain.


class HttpError(Exception):
    """Raised by route handlers; becomes a text/plain error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = TEXT  # None: no Content-Type header (a null @ResponseBody)
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode(), JSON)


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), TEXT)


def empty_response(status: int = 200) -> Response:
    """A handler that returned null / ``ResponseEntity<Void>``: no body, no Content-Type."""
    return Response(status, b"", None)


def _non_null(data: dict[str, Any]) -> dict[str, Any]:
    """XNAT's Jackson leaves null fields out: MONO
    web/src/main/java/org/nrg/xnat/configuration/SerializerConfig.java
    `serializationInclusion(JsonInclude.Include.NON_NULL)`."""
    return {k: v for k, v in data.items() if v is not None}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    user: User | None = None
    session_id: str | None = None

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise HttpError(400, "Request body is not valid JSON") from exc

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise HttpError(400, "Request body must be a JSON object")
        return data

    @property
    def username(self) -> str:
        return self.user.username if self.user else ""

    def server_root(self) -> str:
        return "http://" + (self.headers.get("Host") or "localhost")


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., Response]
    anonymous: bool = False  # served without credentials (XNAT's "openUrls")
    pre_init: bool = False  # served before initialisation (XNAT's "initUrls", docs/xnat-api.md §6)
    xsync: bool = False  # only when the Xsync plugin is "installed" (docs/xnat-api.md §16)
    remote: bool = False  # makes outgoing HTTP calls: not run under the state lock


# -- small helpers ---------------------------------------------------------------------------


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise HttpError(400, f"{what} must be true or false")


def _coerce(current: Any, value: Any) -> Any:
    """Convert a posted value to the preference's type, as XNAT's preference beans do (§7)."""
    if isinstance(value, str):
        if isinstance(current, bool):
            return _bool(value, "value")
        if isinstance(current, int) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        if isinstance(current, list):
            try:
                parsed = json.loads(value.replace("'", '"'))
            except ValueError:
                parsed = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
            return parsed
    return value


def _version_at_least(state: State, *wanted: int) -> bool:
    return state.version_tuple() >= wanted


def _html_page(title: str, body: str) -> Response:
    page = (
        f"<!DOCTYPE html><html><head><title>{title}</title></head><body>"
        f"<p><strong>{STANDIN_NOTICE}</strong></p>{body}</body></html>"
    )
    return Response(200, page.encode(), HTML)


_TOKEN_PATH = re.compile(r"^(/data/services/tokens/(?:issue|validate|invalidate)/[^/]+/)[^/]+$")


def _redact(path: str) -> str:
    """Alias secrets travel in token paths (docs/xnat-api.md §6): keep them out of the log."""
    if path.startswith("/data/services/tokens/issue/user/"):
        return path
    return _TOKEN_PATH.sub(r"\1(secret)", path)


# MONO web/src/main/java/org/nrg/dcm/scp/DicomSCPManager.java: AE_TITLE_PATTERN, used with
# matcher(...).matches(): 1-16 printable ASCII, no backslash, no leading/trailing space.
_AE_TITLE = re.compile(r"(?=[^\\]*[^\s\\]+$)(?=^[^\s\\]+[^\\]*)[ -~]{1,16}")

# XS src/main/java/org/nrg/xsync/components/XsyncSitePreferencesBean.java@024dea2
# calculateIntervalInMillis: `<N> hour(s)|minute(s)`, at least 300000 ms.
_XSYNC_INTERVAL = re.compile(r"^\s*(\d+)\s+(hour|minute)s?\s*$", re.IGNORECASE)


def _xsync_status_time(value: Any) -> Any:
    """ProjectSyncStatus renders its Dates with SimpleDateFormat("yyyy-MM-dd hh:mm:ss"): a
    12-hour clock with no AM/PM (XS .../components/elements/ProjectSyncStatus.java@4043a29)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value / 1000)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %I:%M:%S")
    return value


class Api:
    """Route table and handlers. One instance per stand-in; handlers run under ``state.lock``."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.routes: list[Route] = []
        self._build_routes()

    # -- routing -----------------------------------------------------------------------------
    def _add(self, method: str, path: str, handler: Callable[..., Response], **flags: bool) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self.routes.append(Route(method, re.compile(f"^{regex}$"), handler, **flags))

    def _build_routes(self) -> None:
        a = self._add
        a("GET", "/", self.root, anonymous=True, pre_init=True)
        # §6 sessions and alias tokens. Logging in works before initialisation (the admin must
        # log in to reach the setup page at all); everything else then gets the setup page.
        # MONO web/src/main/java/org/nrg/xnat/restlet/XNATApplication.java attaches
        # UserSession at "/JSESSION", which Restlet's old routing also matches by prefix
        # (/data/JSESSIONID is what Xsync's credential check calls).
        a("POST", "/data/JSESSION", self.jsession, anonymous=True, pre_init=True)
        a("GET", "/data/JSESSION", self.jsession, pre_init=True)
        a("GET", "/data/JSESSIONID", self.jsession, pre_init=True)
        a("POST", "/data/JSESSIONID", self.jsession, pre_init=True)
        a("DELETE", "/data/JSESSION", self.jsession_delete, pre_init=True)
        a("GET", "/data/services/tokens/issue", self.token_issue)
        a("GET", "/data/services/tokens/issue/user/{username}", self.token_issue_user)
        a("GET", "/data/services/tokens/issue/{alias}/{secret}", self.token_refresh)
        a("GET", "/data/services/tokens/validate/{alias}/{secret}", self.token_validate)
        a("GET", "/data/services/tokens/invalidate/{alias}/{secret}", self.token_invalidate)
        # §7 site configuration. MONO web/src/main/resources/META-INF/xnat/security/
        # configured-urls.yaml: initUrls /xapi/siteConfig, /xapi/siteConfig/initialized,
        # /xapi/notifications/smtp; openUrls include /xapi/siteConfig/buildInfo (no login).
        a("GET", "/xapi/siteConfig", self.site_config_get, pre_init=True)
        a("POST", "/xapi/siteConfig", self.site_config_post, pre_init=True)
        a("GET", "/xapi/siteConfig/initialized", self.initialized, pre_init=True)
        a("GET", "/xapi/siteConfig/buildInfo", self.build_info, anonymous=True)
        a("GET", "/xapi/siteConfig/values/{keys}", self.site_config_values)
        a("GET", "/xapi/siteConfig/{key}", self.site_config_key_get)
        a("POST", "/xapi/siteConfig/{key}", self.site_config_key_post)
        # §8 users
        a("GET", "/xapi/users", self.users_list)
        a("POST", "/xapi/users", self.user_create)
        a("GET", "/xapi/users/{u}", self.user_get)
        a("PUT", "/xapi/users/{u}", self.user_put)
        a("PUT", "/xapi/users/{u}/enabled/{flag}", self.user_enabled)
        a("GET", "/xapi/users/{u}/roles", self.user_roles)
        a("PUT", "/xapi/users/{u}/roles", self.user_roles_put_list)
        a("PUT", "/xapi/users/{u}/roles/{role}", self.user_role_put)
        a("DELETE", "/xapi/users/{u}/roles/{role}", self.user_role_delete)
        a("GET", "/xapi/users/{u}/groups", self.user_groups)
        a("PUT", "/xapi/users/{u}/groups", self.user_groups_put_list)
        a("PUT", "/xapi/users/{u}/groups/{group}", self.user_group_put)
        a("DELETE", "/xapi/users/{u}/groups/{group}", self.user_group_delete)
        # §15 SMTP
        a("GET", "/xapi/notifications", self.notifications_get)
        a("POST", "/xapi/notifications", self.notifications_post)
        a("GET", "/xapi/notifications/smtp", self.smtp_get, pre_init=True)
        a("POST", "/xapi/notifications/smtp", self.smtp_form_post)
        # §9 projects (also under /data/archive, like XNAT)
        p = "/data(?:/archive)?/projects"
        a("GET", p, self.projects_list)
        a("POST", p, self.project_create)
        a("GET", p + "/{pid}", self.project_get)
        a("PUT", p + "/{pid}", self.project_put)
        a("GET", p + "/{pid}/accessibility", self.project_access_get)
        a("PUT", p + "/{pid}/accessibility/{value}", self.project_access_put)
        a("GET", p + "/{pid}/prearchive_code", self.prearchive_get)
        a("PUT", p + "/{pid}/prearchive_code/{code}", self.prearchive_put)
        a("GET", p + "/{pid}/users", self.project_users)
        a("PUT", p + "/{pid}/users/{level}/{username}", self.project_user_put)
        a("DELETE", p + "/{pid}/users/{level}/{username}", self.project_user_delete)
        # §10 DICOM SCP receivers
        a("GET", "/xapi/dicomscp", self.scp_list)
        a("POST", "/xapi/dicomscp", self.scp_create)
        a("GET", "/xapi/dicomscp/title/{ae}/{port}", self.scp_by_title)
        a("GET", "/xapi/dicomscp/{rid}", self.scp_get)
        a("PUT", "/xapi/dicomscp/{rid}", self.scp_put)
        a("DELETE", "/xapi/dicomscp/{rid}", self.scp_delete)
        a("GET", "/xapi/dicomscp/{rid}/enabled", self.scp_enabled_get)
        a("PUT", "/xapi/dicomscp/{rid}/enabled/{flag}", self.scp_enabled_put)
        # §11 anonymization
        a("GET", "/xapi/anonymize/default", self.anon_default)
        a("GET", "/xapi/anonymize/site", self.anon_site_get)
        a("PUT", "/xapi/anonymize/site", self.anon_site_put)
        a("GET", "/xapi/anonymize/site/enabled", self.anon_site_enabled_get)
        a("PUT", "/xapi/anonymize/site/enabled", self.anon_site_enabled_put)
        a("GET", "/xapi/anonymize/projects/{pid}", self.anon_project_get)
        a("PUT", "/xapi/anonymize/projects/{pid}", self.anon_project_put)
        a("GET", "/xapi/anonymize/projects/{pid}/enabled", self.anon_project_enabled_get)
        a("PUT", "/xapi/anonymize/projects/{pid}/enabled", self.anon_project_enabled_put)
        # §12 event service
        a("GET", "/xapi/events/prefs", self.events_prefs_get)
        a("PUT", "/xapi/events/prefs", self.events_prefs_put)
        a("GET", "/xapi/events/subscriptions", self.subscriptions_list)
        a("POST", "/xapi/events/subscription", self.subscription_create)
        a("POST", "/xapi/projects/{pid}/events/subscription", self.subscription_create)
        a("GET", "/xapi/events/subscription/{sid}", self.subscription_get)
        a("PUT", "/xapi/events/subscription/{sid}", self.subscription_put)
        a("DELETE", "/xapi/events/subscription/{sid}", self.subscription_delete)
        a("POST", "/xapi/events/subscription/{sid}/{action}", self.subscription_activate)
        # §13 container service
        a("GET", "/xapi/docker/server", self.docker_get)
        a("POST", "/xapi/docker/server", self.docker_post)
        a("GET", "/xapi/docker/server/ping", self.docker_ping)
        a("GET", "/xapi/commands", self.commands_list)
        a("POST", "/xapi/commands", self.command_create)
        a("GET", "/xapi/commands/{cid}", self.command_get)
        # CS src/main/java/org/nrg/containers/rest/CommandRestApi.java: the update is
        # `POST /commands/{id}` (ResponseEntity<Void>, 200); there is no PUT mapping.
        a("POST", "/xapi/commands/{cid}", self.command_update)
        a("DELETE", "/xapi/commands/{cid}", self.command_delete)
        w = "/xapi/commands/{cid}/wrappers/{wrapper}"
        pw = "/xapi/projects/{pid}/commands/{cid}/wrappers/{wrapper}"
        a("GET", w + "/enabled", self.wrapper_enabled_get)
        a("PUT", w + "/{state}", self.wrapper_enabled_put)
        a("GET", pw + "/enabled", self.project_wrapper_enabled_get)
        a("PUT", pw + "/{state}", self.wrapper_enabled_put)
        # §14 plugins
        a("GET", "/xapi/plugins", self.plugins_list)
        a("GET", "/xapi/plugins/{plugin}", self.plugin_get)
        # §16 Xsync (404 unless constructed with xsync=True). There is no
        # /xapi/xsync/status/projects/{p} in any plugin version (only syncStatus, below), so
        # that path is unmapped: 404.
        x = {"xsync": True}
        a("GET", "/xapi/xsyncSitePreferences", self.xsync_prefs_get, **x)
        a("POST", "/xapi/xsyncSitePreferences", self.xsync_prefs_post, **x)
        a("GET", "/xapi/xsync/setup/projects/{pid}", self.xsync_setup_get, **x)
        a("POST", "/xapi/xsync/setup/projects/{pid}", self.xsync_setup_post, **x)
        r = {"xsync": True, "remote": True}
        a("POST", "/xapi/xsync/credentials/save/projects/{pid}", self.xsync_save, **r)
        a("POST", "/xapi/xsync/credentials/check/projects/{pid}", self.xsync_check, **r)
        a("POST", "/xapi/xsync/remoteREST", self.xsync_remote_rest, **r)
        a("GET", "/xapi/xsync/projects", self.xsync_projects, **x)
        a("POST", "/xapi/xsync/projects/{pid}", self.xsync_sync_now, **x)
        a("GET", "/xapi/xsync/syncStatus/projects/{pid}", self.xsync_status, **x)
        a("POST", "/xapi/xsync/unblock/{pid}", self.xsync_unblock, **x)
        a("GET", "/xapi/xsync/history", self.xsync_history, **x)
        a("GET", "/xapi/xsync/history/projects/{pid}", self.xsync_history, **x)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path params, whether the path exists for some other method)."""
        path_known = False
        for route in self.routes:
            if route.xsync and not self.state.xsync:
                continue
            m = route.pattern.match(path)
            if not m:
                continue
            if route.method == method:
                return route, {k: unquote(v) for k, v in m.groupdict().items()}, True
            path_known = True
        return None, {}, path_known

    # -- authentication (docs/xnat-api.md §6) -----------------------------------------------------
    def authenticate(self, username: str, password: str) -> User | None:
        """Basic auth: an enabled user's password, or a usable alias token's alias:secret
        (XNAT accepts an alias token as HTTP Basic credentials on every path)."""
        state = self.state
        user = state.users.get(username)
        if user is not None and user.password is not None:
            ok = secrets.compare_digest(user.password.encode(), password.encode())
            return user if ok and user.enabled else None
        token = state.tokens.get(username)
        if token is not None and token.usable():
            if not secrets.compare_digest(token.secret.encode(), password.encode()):
                return None
            owner = state.users.get(token.username)
            return owner if owner is not None and owner.enabled else None
        return None

    def session_user(self, sid: str) -> User | None:
        username = self.state.sessions.get(sid)
        user = self.state.users.get(username) if username else None
        return user if user is not None and user.enabled else None

    # -- permission helpers ---------------------------------------------------------------------
    @staticmethod
    def require_admin(req: Request) -> User:
        if req.user is None or not req.user.is_admin:
            raise HttpError(403, "Administrator access required")
        return req.user

    def user_or_404(self, username: str) -> User:
        user = self.state.users.get(username)
        if user is None:
            # MONO libs/xdat/.../security/user/exceptions/UserNotFoundException.java:
            # @ResponseStatus(HttpStatus.NOT_FOUND)
            raise HttpError(404, f"No user {username}")
        return user

    def project_or_404(self, pid: str) -> Project:
        project = self.state.projects.get(pid)
        if project is None:
            raise HttpError(404, f"No project {pid}")
        return project

    @staticmethod
    def can_read(user: User | None, project: Project) -> bool:
        if user is None:
            return False
        if user.is_admin or set(user.groups) & set(SITE_GROUPS):
            return True
        return user.username in project.members or project.accessibility != "private"

    @staticmethod
    def can_edit(user: User | None, project: Project) -> bool:
        """Edit permission: owners and members (collaborators only read)."""
        if user is None:
            return False
        if user.is_admin or "ALL_DATA_ADMIN" in user.groups:
            return True
        return project.members.get(user.username) in ("owner", "member")

    @staticmethod
    def can_own(user: User | None, project: Project) -> bool:
        if user is None:
            return False
        if user.is_admin or "ALL_DATA_ADMIN" in user.groups:
            return True
        return project.members.get(user.username) == "owner"

    def owned_project(self, req: Request, pid: str) -> Project:
        project = self.project_or_404(pid)
        if not self.can_own(req.user, project):
            raise HttpError(403, f"Owner access to {pid} required")
        return project

    def _readable_project(self, req: Request, pid: str) -> Project:
        project = self.project_or_404(pid)
        if not self.can_read(req.user, project):
            raise HttpError(403, f"No access to project {pid}")
        return project

    # -- / ----------------------------------------------------------------------------------------
    def root(self, req: Request) -> Response:
        state = self.state
        if not state.site_config.get("initialized"):
            return self.setup_page()
        return _html_page(
            "XNAT stand-in",
            f"<p>name: {state.name}; emulated XNAT version: {state.version}; "
            f"profile: {state.profile}; Xsync: "
            f"{state.xsync_build + ' build' if state.xsync else 'no'}</p>",
        )

    @staticmethod
    def setup_page() -> Response:
        # docs/xnat-api.md §6 "A JSON endpoint answering 200 with text/html is the setup/login
        # page".
        # MONO web/src/main/java/org/nrg/xnat/security/XnatInitCheckFilter.java redirects a
        # logged-in user on a non-init path to /setup (admin) or the "Unconfigured" page.
        return _html_page(
            "XNAT Setup",
            "<h1>Site setup</h1><p>This site has not been initialised (initialized=false). "
            "Complete the site setup first.</p>",
        )

    # -- §6 sessions and alias tokens -----------------------------------------------------------
    def jsession(self, req: Request) -> Response:
        if req.user is None and req.content_type == "application/x-www-form-urlencoded":
            form = parse_qs(req.text())
            username = (form.get("username") or [""])[0]
            password = (form.get("password") or [""])[0]
            req.user = self.authenticate(username, password) if username else None
        if req.user is None:
            raise HttpError(401, "Authentication required")
        sid = req.session_id or self.state.new_session(req.user.username)
        resp = text_response(sid)
        resp.headers["Set-Cookie"] = f"JSESSIONID={sid}; Path=/; HttpOnly"
        return resp

    def jsession_delete(self, req: Request) -> Response:
        if req.session_id:
            self.state.sessions.pop(req.session_id, None)
        return text_response("")

    def _token_json(self, token: AliasToken) -> dict[str, Any]:
        return {
            "alias": token.alias,
            "secret": token.secret,
            "estimatedExpirationTime": token.expires_ms,
            "xdatUserId": self.state.users[token.username].xdat_user_id,
            "singleUse": False,
            "enabled": True,
        }

    def _token_from_path(self, alias: str, secret: str) -> AliasToken:
        token = self.state.tokens.get(alias)
        if (
            token is None
            or not token.usable()
            or not secrets.compare_digest(token.secret.encode(), secret.encode())
        ):
            # docs/xnat-api.md §6: invalidated (or expired) tokens get 401.
            raise HttpError(401, "Invalid or expired alias token")
        return token

    def token_issue(self, req: Request) -> Response:
        return json_response(self._token_json(self.state.issue_token(req.username)))

    def token_issue_user(self, req: Request, username: str) -> Response:
        self.require_admin(req)  # docs/xnat-api.md §6: an admin can issue for another user
        self.user_or_404(username)
        return json_response(self._token_json(self.state.issue_token(username)))

    def token_refresh(self, req: Request, alias: str, secret: str) -> Response:
        # docs/xnat-api.md §16.6: Xsync refreshes with the *current* token; same user, new token.
        token = self._token_from_path(alias, secret)
        return json_response(self._token_json(self.state.issue_token(token.username)))

    def token_validate(self, req: Request, alias: str, secret: str) -> Response:
        token = self._token_from_path(alias, secret)
        return json_response({"valid": token.username})

    def token_invalidate(self, req: Request, alias: str, secret: str) -> Response:
        token = self._token_from_path(alias, secret)
        if req.user is None or not (req.user.is_admin or req.user.username == token.username):
            raise HttpError(403, "Not allowed to invalidate this token")
        token.valid = False
        return text_response("Token invalidated")

    # -- §7 site configuration ------------------------------------------------------------------
    def _apply_site_config(self, updates: dict[str, Any]) -> None:
        config = self.state.site_config
        coerced = {k: _coerce(config.get(k), v) for k, v in updates.items()}
        if "initialized" in coerced:
            coerced["initialized"] = _bool(coerced["initialized"], "initialized")
        initializing = bool(coerced.get("initialized")) and not config.get("initialized")
        if initializing:
            # docs/xnat-api.md §6 step 3 / §4: siteId, siteUrl, adminEmail must be set to
            # initialise.
            merged = {**config, **coerced}
            missing = [k for k in INIT_REQUIRED_KEYS if not str(merged.get(k) or "").strip()]
            if missing:
                raise HttpError(400, "Missing required settings: " + ", ".join(missing))
        # docs/xnat-api.md §6 step 3: other keys first, then `initialized` (fires the init
        # handlers).
        initialized = coerced.pop("initialized", None)
        config.update(coerced)
        if initialized is not None:
            config["initialized"] = initialized
        if initializing:
            self.state.run_init_tasks()

    def site_config_get(self, req: Request) -> Response:
        # MONO web/src/main/java/org/nrg/xapi/rest/settings/SiteConfigApi.java
        # getSiteConfigProperties: no restrictTo. Pre-init a non-admin gets
        # Collections.emptyMap(); an admin's pre-init read sets a blank siteUrl from the request
        # (`_preferences.setSiteUrl(XnatHttpUtils.getServerRoot(request))`). After init everyone
        # gets the keys `_access.canRead(user, key)` allows: all for an admin, the "public" +
        # "authenticated" lists of site-config-access.yaml for anyone else (200, never 403).
        state = self.state
        config = state.site_config
        user = req.user
        is_admin = user is not None and user.is_admin
        if not config.get("initialized"):
            if not is_admin:
                return json_response({})
            if not str(config.get("siteUrl") or "").strip():
                config["siteUrl"] = req.server_root()
        if is_admin:
            return json_response({k: "" if v is None else v for k, v in config.items()})
        readable = {k: v for k, v in config.items() if k in SITE_CONFIG_AUTHENTICATED_KEYS}
        return json_response({k: "" if v is None else v for k, v in readable.items()})

    def site_config_post(self, req: Request) -> Response:
        self.require_admin(req)
        if req.content_type == "application/x-www-form-urlencoded":  # §7 "JSON or form"
            updates: dict[str, Any] = {k: v[-1] for k, v in parse_qs(req.text()).items()}
        else:
            updates = req.json_object()
        self._apply_site_config(updates)
        return text_response("")

    def _require_site_config_read(self, req: Request, keys: list[str]) -> None:
        # MONO web/src/main/java/org/nrg/xapi/authorization/SiteConfigPreferenceXapiAuthorization
        # .java: `{property}` and `values/{preferences}` GETs pass only if every key is readable
        # (admin: all; others: site-config-access.yaml public + authenticated; `initialized` is
        # in the admin list) -> 403 otherwise.
        if req.user is not None and req.user.is_admin:
            return
        if not all(k in SITE_CONFIG_AUTHENTICATED_KEYS for k in keys):
            raise HttpError(403, "Not authorized to access site configuration properties")

    def initialized(self, req: Request) -> Response:
        # MONO SiteConfigApi `{property}` GET (restrictTo = Authorizer): `initialized` is in the
        # admin-only list, so a non-admin gets 403. It is an init URL, not an open one: without
        # credentials the answer is 401 (MONO XnatAuthenticationEntryPoint, non-browser agents).
        self._require_site_config_read(req, ["initialized"])
        return json_response(bool(self.state.site_config.get("initialized")))

    def build_info(self, req: Request) -> Response:
        # MONO web/src/main/java/org/nrg/xnat/services/XnatAppInfo.java: PROPERTY_VERSION =
        # "version"; /xapi/siteConfig/buildInfo is an open URL.
        return json_response(
            {
                "version": self.state.version,
                "buildNumber": "standin",
                "commit": "standin",
                "standin": STANDIN_NOTICE,
            }
        )

    def site_config_values(self, req: Request, keys: str) -> Response:
        config = self.state.site_config
        wanted = [k.strip() for k in keys.split(",") if k.strip()]
        self._require_site_config_read(req, wanted)
        return json_response({k: config[k] for k in wanted if k in config})

    def site_config_key_get(self, req: Request, key: str) -> Response:
        self._require_site_config_read(req, [key])
        if key not in self.state.site_config:
            raise HttpError(404, f"No site configuration property named {key}")
        return json_response(self.state.site_config[key])

    def site_config_key_post(self, req: Request, key: str) -> Response:
        self.require_admin(req)
        # docs/xnat-api.md §7: body is text/plain or JSON
        value: Any = req.json() if req.content_type == JSON else req.text()
        self._apply_site_config({key: value})
        return text_response("")

    # -- §8 users ----------------------------------------------------------------------------------
    def _user_json(self, user: User) -> dict[str, Any]:
        return {
            "id": user.xdat_user_id,
            "username": user.username,
            "firstName": user.first_name,
            "lastName": user.last_name,
            "email": user.email,
            "enabled": user.enabled,
            "verified": user.verified,
            "admin": user.is_admin,
        }

    def users_list(self, req: Request) -> Response:
        if self.state.site_config.get("restrictUserListAccessToAdmins"):
            self.require_admin(req)
        return json_response(sorted(self.state.users))

    def _self_or_admin(self, req: Request, username: str) -> User:
        user = self.user_or_404(username)
        if req.user is None or not (req.user.is_admin or req.user.username == username):
            raise HttpError(403, "Administrator access required")
        return user

    def user_create(self, req: Request) -> Response:
        self.require_admin(req)
        body = req.json_object()
        username = str(body.get("username") or "").strip()
        password = str(body.get("password") or "")
        # docs/xnat-api.md §8; the stand-in only models local (localdb) users: both are required.
        if not username or not password:
            raise HttpError(400, "username and password are required for a local user")
        if username in self.state.users:
            # MONO UsersApi.validateUser: ResourceAlreadyExistsException -> 409
            raise HttpError(409, f"User {username} already exists")
        # The optional `admin` flag of the payload is ignored: roles come from /roles (§6 step 5).
        user = self.state.add_user(
            username,
            password,
            enabled=_bool(body.get("enabled", True), "enabled"),
            verified=_bool(body.get("verified", True), "verified"),
            email=str(body.get("email") or ""),
            first_name=str(body.get("firstName") or ""),
            last_name=str(body.get("lastName") or ""),
        )
        return json_response(self._user_json(user), 201)

    def user_get(self, req: Request, u: str) -> Response:
        # MONO web/src/main/java/org/nrg/xapi/rest/users/UsersApi.java getUser (same in
        # NrgXnat/xnat-web src/main/java/org/nrg/xapi/rest/users/UsersApi.java@0f3878b):
        # UserNotFoundException -> InitializationException, @ResponseStatus(INTERNAL_SERVER_ERROR):
        # an unknown user is a 500, not a 404. The @Username authorization (self or admin) runs
        # first, so a non-admin asking about someone else gets 403 either way.
        if req.user is None or not (req.user.is_admin or req.user.username == u):
            raise HttpError(403, "Not authorized to view this user")
        user = self.state.users.get(u)
        if user is None:
            raise HttpError(500, f"An error occurred initializing the user {u}")
        return json_response(self._user_json(user))

    def user_put(self, req: Request, u: str) -> Response:
        # MONO UsersApi.updateUser: `{username}` PUT, restrictTo = Admin (self-service is
        # PUT /xapi/users/update), consumes JSON. Blank strings are ignored, a non-blank password
        # always marks the user dirty, other fields only when they differ; nothing dirty ->
        # NotModifiedException, @ResponseStatus(NOT_MODIFIED): 304. Disabling a user
        # deactivates all of the user's alias tokens.
        self.require_admin(req)
        user = self.user_or_404(u)
        body = req.json_object()
        if str(body.get("username") or "").strip() and body["username"] != u:
            raise HttpError(400, "The username for the submitted user object must match")
        dirty = False
        email = str(body.get("email") or "").strip()
        if email and email != user.email:
            user.email = email
            dirty = True
        password = body.get("password")
        if isinstance(password, str) and password.strip():
            user.password = password
            dirty = True
        for key, attr in (("firstName", "first_name"), ("lastName", "last_name")):
            value = str(body.get(key) or "").strip()
            if value and value != getattr(user, attr):
                setattr(user, attr, value)
                dirty = True
        if body.get("enabled") is not None:
            enabled = _bool(body["enabled"], "enabled")
            if enabled != user.enabled:
                user.enabled = enabled
                if not enabled:
                    self.state.deactivate_tokens_of(u)
                dirty = True
        if body.get("verified") is not None:
            verified = _bool(body["verified"], "verified")
            if verified != user.verified:
                user.verified = verified
                dirty = True
        if not dirty:
            return empty_response(304)
        return json_response(self._user_json(user))

    def user_enabled(self, req: Request, u: str, flag: str) -> Response:
        # MONO UsersApi.usersIdEnabledFlagPut: returns early (200) when unchanged.
        self.require_admin(req)
        self.user_or_404(u).enabled = _bool(flag, "enabled")  # docs/xnat-api.md §6 step 7
        return text_response("")

    def user_roles(self, req: Request, u: str) -> Response:
        return json_response(list(self._self_or_admin(req, u).roles))

    def user_role_put(self, req: Request, u: str, role: str) -> Response:
        self.require_admin(req)
        user = self.user_or_404(u)
        if role not in user.roles:
            user.roles.append(role)
        return text_response("")

    def user_roles_put_list(self, req: Request, u: str) -> Response:
        self.require_admin(req)
        user = self.user_or_404(u)
        roles = req.json()
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise HttpError(400, "Body must be a JSON list of role names")
        user.roles.extend(r for r in roles if r not in user.roles)
        return text_response("")

    def user_role_delete(self, req: Request, u: str, role: str) -> Response:
        self.require_admin(req)
        user = self.user_or_404(u)
        if role in user.roles:
            user.roles.remove(role)
        return text_response("")

    def user_groups(self, req: Request, u: str) -> Response:
        self._self_or_admin(req, u)
        return json_response(self.state.groups_of(u))

    def _set_group(self, user: User, group: str, member: bool) -> None:
        if group in SITE_GROUPS:  # docs/xnat-api.md §8 ALL_DATA_ADMIN
            if member and group not in user.groups:
                user.groups.append(group)
            elif not member and group in user.groups:
                user.groups.remove(group)
            return
        # Project groups are `{project}_{owner|member|collaborator}` (docs/xnat-api.md §9).
        m = re.fullmatch(r"(.+)_(owner|member|collaborator)", group)
        project = self.state.projects.get(m.group(1)) if m else None
        if m is None or project is None:
            raise HttpError(404, f"No group {group}")
        if member:
            project.members[user.username] = m.group(2)
        elif project.members.get(user.username) == m.group(2):
            del project.members[user.username]

    def user_group_put(self, req: Request, u: str, group: str) -> Response:
        self.require_admin(req)
        self._set_group(self.user_or_404(u), group, member=True)
        return text_response("")

    def user_groups_put_list(self, req: Request, u: str) -> Response:
        self.require_admin(req)
        user = self.user_or_404(u)
        groups = req.json()
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise HttpError(400, "Body must be a JSON list of group ids")
        for group in groups:
            self._set_group(user, group, member=True)
        return text_response("")

    def user_group_delete(self, req: Request, u: str, group: str) -> Response:
        self.require_admin(req)
        self._set_group(self.user_or_404(u), group, member=False)
        return text_response("")

    # -- §15 SMTP ----------------------------------------------------------------------------------
    _AUTH = "mail.smtp.auth"
    _STARTTLS = "mail.smtp.starttls.enable"
    _SSL_TRUST = "mail.smtp.ssl.trust"

    def notifications_get(self, req: Request) -> Response:
        self.require_admin(req)
        return json_response({"smtpServer": json.dumps(self.state.smtp)})

    @staticmethod
    def _parse_smtp_server(server: dict[str, Any]) -> dict[str, Any]:
        """Bind a JSON object into an SmtpServer (MONO
        libs/xdat/src/main/java/org/nrg/xdat/preferences/SmtpServer.java): hostname, port,
        protocol, username, password (null when left out), mailProperties (strings), and the
        smtpAuth / smtpStartTls / smtpSslTrust setters, which write into the mail properties."""
        props: dict[str, str] = {}
        raw = server.get("mailProperties")
        if isinstance(raw, dict):
            props = {
                str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in raw.items()
            }
        for key, prop in (
            ("smtpAuth", Api._AUTH),
            ("smtpStartTls", Api._STARTTLS),
            ("smtpSslTrust", Api._SSL_TRUST),
        ):
            if server.get(key) is not None:
                value = server[key]
                props[prop] = str(value).lower() if isinstance(value, bool) else str(value)
        port = server.get("port", 0)
        if isinstance(port, str) and re.fullmatch(r"-?\d+", port.strip()):
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool):
            raise HttpError(400, "port must be an integer")
        fields: dict[str, Any] = {"port": port, "mailProperties": props}
        for key in ("hostname", "protocol", "username", "password"):
            value = server.get(key)
            fields[key] = None if value is None else str(value)
        return fields

    def _store_smtp_server(self, posted: dict[str, Any]) -> None:
        """NotificationsPreferences.setSmtpServer (MONO
        libs/xdat/src/main/java/org/nrg/xdat/preferences/NotificationsPreferences.java).

        With ``smtp_post_500`` (MONO's code): it sets hostname, port, protocol, username,
        password, smtpAuth, smtpStartTls, smtpSslTrust one preference at a time;
        AbstractPreferenceBean.set does `value.trim()` (libs/prefs/.../AbstractPreferenceBean.java),
        so the first null value (a field left out; always smtpSslTrust when
        mail.smtp.ssl.trust is not sent) throws a NullPointerException -> 500 with what came
        before stored. Even with every field present, the last step, setSmtpMailProperties,
        calls setSmtpServer(new SmtpServer(properties)) whose hostname is null: 500 again. The
        other mail properties are never stored that way. Without the setting (a build whose
        setters do not throw) the whole server is replaced, mail properties cleared and
        replaced (SmtpServer.setMailProperties: `_mailProperties.clear()`), and the answer is 200.
        """
        smtp = self.state.smtp
        stored_props: dict[str, str] = smtp.setdefault("mailProperties", {})
        props = posted["mailProperties"]
        if not self.state.smtp_post_500:
            for key in ("hostname", "protocol", "username", "password"):
                smtp[key] = posted[key] or ""
            smtp["port"] = posted["port"]
            smtp["mailProperties"] = dict(props)
            return
        for key in ("hostname", "port", "protocol", "username", "password"):
            if posted[key] is None:
                raise HttpError(500, "There was an error in the request : NullPointerException")
            smtp[key] = posted[key]
        stored_props[self._AUTH] = "true" if props.get(self._AUTH) == "true" else "false"
        stored_props[self._STARTTLS] = "true" if props.get(self._STARTTLS) == "true" else "false"
        if props.get(self._SSL_TRUST) is None:
            raise HttpError(500, "There was an error in the request : NullPointerException")
        stored_props[self._SSL_TRUST] = props[self._SSL_TRUST]
        raise HttpError(500, "There was an error in the request : NullPointerException")

    def notifications_post(self, req: Request) -> Response:
        # MONO web/src/main/java/org/nrg/xapi/rest/notifications/NotificationsApi.java
        # setNotificationsProperties: `@RequestBody Properties`; `smtpServer` is deserialized
        # into an SmtpServer (an unparsable one is logged and skipped: 200, nothing applied).
        self.require_admin(req)
        body = req.json_object()
        server = body.get("smtpServer")
        if server is not None:
            # docs/xnat-api.md §15: `smtpServer` is itself a JSON *string*.
            if not isinstance(server, str):
                raise HttpError(400, "smtpServer must be a JSON string")
            try:
                parsed = json.loads(server)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                self._store_smtp_server(self._parse_smtp_server(parsed))
        return empty_response(200)

    def smtp_get(self, req: Request) -> Response:
        # MONO NotificationsApi.getSmtpServerProperties -> SmtpServer.asProperties(): a flat map
        # of strings; blank hostname/protocol/username/password are LEFT OUT
        # (`if (StringUtils.isNotBlank(_username))`), port is `Integer.toString(_port)`, and the
        # mail properties are top-level keys. They come from
        # NotificationsPreferences.getSmtpMailProperties(): the stored smtpMailProperties plus,
        # only `if (getSmtpAuth())`, mail.smtp.auth=true, mail.smtp.starttls.enable=true (when on)
        # and mail.smtp.ssl.trust (when not blank). A stored password is returned as stored.
        self.require_admin(req)
        smtp = self.state.smtp
        out: dict[str, str] = {}
        for key in ("hostname", "protocol", "username", "password"):
            if str(smtp.get(key) or "").strip():
                out[key] = str(smtp[key])
        out["port"] = str(smtp.get("port", 25))
        props = smtp.get("mailProperties") or {}
        derived = (self._AUTH, self._STARTTLS, self._SSL_TRUST)
        out.update({k: str(v) for k, v in props.items() if k not in derived})
        if str(props.get(self._AUTH, "")).lower() == "true":
            out[self._AUTH] = "true"
            if str(props.get(self._STARTTLS, "")).lower() == "true":
                out[self._STARTTLS] = "true"
            if str(props.get(self._SSL_TRUST) or "").strip():
                out[self._SSL_TRUST] = str(props[self._SSL_TRUST])
        return json_response(out)

    def smtp_form_post(self, req: Request) -> Response:
        self.require_admin(req)
        # docs/xnat-api.md §15: the form-encoded POST mis-binds and returns 500 (nothing applied).
        raise HttpError(500, "Internal Server Error")

    # -- §9 projects -------------------------------------------------------------------------------
    @staticmethod
    def _format(req: Request) -> str:
        return req.query.get("format", "").lower()

    def _project_fields(self, project: Project) -> dict[str, Any]:
        return {
            "ID": project.id,
            "name": project.name,
            "secondary_ID": project.secondary_id,
            "description": project.description,
            "URI": f"/data/projects/{project.id}",
        }

    def projects_list(self, req: Request) -> Response:
        visible = [p for p in self.state.projects.values() if self.can_read(req.user, p)]
        rows = [self._project_fields(p) for p in sorted(visible, key=lambda p: p.id)]
        if self._format(req) != "json":
            # Like XNAT, Restlet listings default to an HTML table without ?format=json (§9).
            cells = "".join(
                f"<tr><td>{html.escape(r['ID'])}</td><td>{html.escape(r['name'])}</td></tr>"
                for r in rows
            )
            return _html_page("Projects", f"<table>{cells}</table>")
        return json_response({"ResultSet": {"Result": rows, "totalRecords": str(len(rows))}})

    def _parse_project_xml(self, req: Request) -> dict[str, str]:
        # docs/xnat-api.md §9: create takes an XML `xnat:projectData` body; JSON is rejected.
        if req.content_type == JSON or req.body.lstrip().startswith(b"{"):
            raise HttpError(415, "Project must be posted as xnat:projectData XML")
        try:
            # Test stand-in parsing XML that the tests themselves send, on 127.0.0.1 only.
            root = ET.fromstring(req.body)  # noqa: S314
        except ET.ParseError as exc:
            raise HttpError(400, "Body is not well-formed XML") from exc
        if root.tag not in (f"{{{XNAT_NS}}}projectData", "projectData"):
            raise HttpError(400, "Expected an xnat:projectData element")

        def child(name: str) -> str:
            node = root.find(f"{{{XNAT_NS}}}{name}")
            if node is None:
                node = root.find(name)
            return (node.text or "").strip() if node is not None else ""

        keys = ("ID", "secondary_ID", "name", "description")
        values = {key: root.get(key) or child(key) for key in keys}
        if not values["ID"]:
            raise HttpError(400, "Project ID is required")
        return values

    def _create_project(self, req: Request, values: dict[str, str]) -> Response:
        project = Project(
            id=values["ID"],
            name=values["name"] or values["ID"],
            secondary_id=values["secondary_ID"] or values["ID"],
            description=values["description"],
        )
        # MONO web/.../restlet/resources/ProjectListResource.java passes
        # getQueryVariable("accessibility") to BaseXnatProjectdata.createProject, which
        # (NrgXnat/xnat-web BaseXnatProjectdata.java@542ad92) does
        # `StringUtils.defaultIfBlank(accessibility, "protected")`: without ?accessibility= a new
        # project is PROTECTED (listed, its member list readable) until it is changed.
        wanted = req.query.get("accessibility", "").strip().lower()
        known = ("private", "protected", "public")
        project.accessibility = wanted if wanted in known else "protected"
        if req.user is not None:
            project.members[req.user.username] = "owner"  # the creator becomes an Owner
        self.state.projects[project.id] = project
        if _version_at_least(self.state, 1, 10) and not self.state.site_config.get("siteUrl"):
            # docs/xnat-api.md §6 / §7: XNAT >= 1.10 with empty siteUrl creates, then answers 500.
            raise HttpError(500, "Internal Server Error")
        return text_response(project.id)

    def project_create(self, req: Request) -> Response:
        cfg = self.state.site_config
        if not (req.user and (req.user.is_admin or cfg.get("uiAllowNonAdminProjectCreation"))):
            raise HttpError(403, "Not allowed to create projects")
        values = self._parse_project_xml(req)
        if values["ID"] in self.state.projects:
            raise HttpError(409, f"Project {values['ID']} already exists")  # §9: 409 exists
        return self._create_project(req, values)

    def project_put(self, req: Request, pid: str) -> Response:
        # docs/xnat-api.md §9: create-or-update with PUT /data/projects/{id}.
        existing = self.state.projects.get(pid)
        values = self._parse_project_xml(req)
        if values["ID"] != pid:
            raise HttpError(400, "Project ID in the body does not match the path")
        if existing is None:
            return self.project_create(req)
        if not self.can_own(req.user, existing):
            raise HttpError(403, f"Owner access to {pid} required")
        existing.name = values["name"] or existing.name
        existing.secondary_id = values["secondary_ID"] or existing.secondary_id
        existing.description = values["description"]
        return text_response(pid)

    def project_get(self, req: Request, pid: str) -> Response:
        project = self._readable_project(req, pid)
        fields = self._project_fields(project)
        del fields["URI"]
        if self._format(req) == "json":
            item = {"meta": {"xsi:type": "xnat:projectData"}, "data_fields": fields}
            return json_response({"items": [item]})
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?><xnat:projectData xmlns:xnat="{XNAT_NS}" '
            f"ID={quoteattr(project.id)} secondary_ID={quoteattr(project.secondary_id)}>"
            f"<xnat:name>{xml_escape(project.name)}</xnat:name>"
            f"<xnat:description>{xml_escape(project.description)}</xnat:description>"
            "</xnat:projectData>"
        )
        return Response(200, xml.encode(), "text/xml;charset=UTF-8")

    def project_access_get(self, req: Request, pid: str) -> Response:
        return text_response(self._readable_project(req, pid).accessibility)

    def project_access_put(self, req: Request, pid: str, value: str) -> Response:
        project = self.owned_project(req, pid)
        if value not in ("private", "protected", "public"):
            raise HttpError(400, "accessibility must be private, protected or public")
        project.accessibility = value
        return text_response("")

    def prearchive_get(self, req: Request, pid: str) -> Response:
        return text_response(str(self._readable_project(req, pid).prearchive_code))

    def prearchive_put(self, req: Request, pid: str, code: str) -> Response:
        project = self.owned_project(req, pid)
        # docs/xnat-api.md §9 quirk: ANY integer is accepted (only 0, 4, 5 mean something).
        if not re.fullmatch(r"-?\d+", code):
            raise HttpError(400, "prearchive code must be an integer")
        project.prearchive_code = int(code)
        return text_response("")

    def _member_rows(self, project: Project, *, hidden: bool = False) -> list[dict[str, Any]]:
        display = {v: k for k, v in LEVEL_BY_PATH.items()}
        rows = []
        for username, level in sorted(project.members.items()):
            u = self.state.users.get(username)
            # MONO web/src/main/java/org/nrg/xnat/restlet/resources/ProjectUserListResource.java:
            # `if(!_displayHiddenUsers){ query.append(" and enabled = 1 "); }`: disabled
            # members are not listed.
            if u is None or not (u.enabled or hidden):
                continue
            rows.append(
                {
                    "GROUP_ID": f"{project.id}_{level}",  # docs/xnat-api.md §9 / §16.4 (Xsync)
                    "displayname": display[level],
                    "login": username,
                    "firstname": u.first_name,
                    "lastname": u.last_name,
                    "email": u.email,
                }
            )
        # `ORDER BY g.id DESC`
        rows.sort(key=lambda r: str(r["GROUP_ID"]), reverse=True)
        return rows

    def _member_table(self, project: Project, *, hidden: bool = False) -> Response:
        rows = self._member_rows(project, hidden=hidden)
        return json_response({"ResultSet": {"Result": rows, "totalRecords": str(len(rows))}})

    def project_users(self, req: Request, pid: str) -> Response:
        # MONO ProjectUserListResource: the project is looked up with the user's rights
        # (XnatProjectdata.getProjectByIDorAlias(projectId, user, false)): a project the user
        # cannot see is "not a valid project ID" -> 404. Then `Roles.isSiteAdmin(user) ||
        # Permissions.canEdit(user, _project) || isWhitelisted(projectId) ||
        # !restrictUserListAccessToAdmins()` else 403. This is also what Xsync's credential
        # save reads with the alias token.
        project = self.state.projects.get(pid)
        if project is None or not self.can_read(req.user, project):
            raise HttpError(
                404,
                f"The project ID {pid} does not appear to be a valid project ID. "
                "Please verify your information.",
            )
        user = req.user
        restricted = bool(self.state.site_config.get("restrictUserListAccessToAdmins"))
        if restricted and not self.can_edit(user, project):
            raise HttpError(403, "Access Denied: Only project owners and site managers can access")
        hidden = str(req.query.get("DISPLAY_HIDDEN_USERS", "")).lower() == "true"
        return self._member_table(project, hidden=hidden)

    def _group_level(self, pid: str, group: str) -> str:
        """MONO web/src/main/java/org/nrg/xnat/restlet/resources/ProjectMemberResource.java
        findGroup: the group id, `{project}_{group}`, or the display name (Owners, ...)."""
        levels = set(LEVEL_BY_PATH.values())
        if group in LEVEL_BY_PATH:
            return LEVEL_BY_PATH[group]
        if group in levels:
            return group
        if group.startswith(pid + "_") and group[len(pid) + 1 :] in levels:
            return group[len(pid) + 1 :]
        raise HttpError(404, f"{pid}: {group}")

    def _find_member(self, user_id: str) -> User | None:
        user = self.state.users.get(user_id)
        if user is None:
            user = next((u for u in self.state.users.values() if u.email == user_id), None)
        return user

    def project_user_put(self, req: Request, pid: str, level: str, username: str) -> Response:
        # MONO ProjectMemberResource: an unknown user id goes into `_unknown`;
        # handlePut calls inviteUnknownUsers (an e-mail invitation, unless
        # securityExternalUserParDisabled) and answers 200 with the member table: no 404 and
        # no member added. The guest account answers 412. Groups.addUserToGroup moves a member
        # out of the project's other group (libs/xdat/.../security/UserGroupManager.java).
        project = self.project_or_404(pid)
        group = self._group_level(pid, level)
        if not self.can_own(req.user, project):
            raise HttpError(403, f"Owner access to {pid} required")
        user = self._find_member(username)
        if user is None:
            if not self.state.site_config.get("securityExternalUserParDisabled"):
                self.state.project_invitations.append((pid, f"{pid}_{group}", username))
            return self._member_table(project)
        if user.username == "guest":
            raise HttpError(412, "The guest user cannot be added to a project")
        project.members[user.username] = group
        return self._member_table(project)

    def project_user_delete(self, req: Request, pid: str, level: str, username: str) -> Response:
        # MONO ProjectMemberResource.handleDelete: an unknown user is simply not removed (200).
        project = self.project_or_404(pid)
        group = self._group_level(pid, level)
        if not self.can_own(req.user, project):
            raise HttpError(403, f"Owner access to {pid} required")
        user = self._find_member(username)
        if user is not None and project.members.get(user.username) == group:
            del project.members[user.username]
        return self._member_table(project)

    # -- §10 DICOM SCP receivers -------------------------------------------------------------------
    def _receiver(self, rid: str) -> dict[str, Any]:
        receiver = self.state.receivers.get(int(rid)) if rid.isdigit() else None
        if receiver is None:
            raise HttpError(404, f"No DICOM SCP receiver {rid}")
        return receiver

    @staticmethod
    def _receiver_json(receiver: dict[str, Any]) -> dict[str, Any]:
        return _non_null(receiver)

    @staticmethod
    def _receiver_fields(body: dict[str, Any]) -> dict[str, Any]:
        # Only DicomSCPInstance fields are bound; unknown keys such as `whitelistText` are ignored
        # (MONO SerializerConfig leaves FAIL_ON_UNKNOWN_PROPERTIES off). Jackson coerces
        # "true"/"8104" strings; anything else is an HttpMessageNotReadableException (400).
        fields = {k: v for k, v in body.items() if k in RECEIVER_DEFAULTS}
        for key in (
            "enabled",
            "customProcessing",
            "directArchive",
            "anonymizationEnabled",
            "whitelistEnabled",
            "routingExpressionsEnabled",
        ):
            if key in fields:
                fields[key] = False if fields[key] is None else _bool(fields[key], key)
        if "port" in fields:
            port = fields["port"]
            if port is None:
                port = 0
            if isinstance(port, str) and port.strip().isdigit():
                port = int(port)
            if not isinstance(port, int) or isinstance(port, bool):
                raise HttpError(400, "port must be an integer")
            fields["port"] = port
        if "whitelist" in fields:
            wl = fields["whitelist"]
            if wl is None:
                wl = []  # DicomSCPInstance.setWhitelist: null -> empty list
            if not isinstance(wl, list):
                raise HttpError(400, "whitelist must be a list of strings")
            fields["whitelist"] = [str(item) for item in wl]
        for key in ("aeTitle", "identifier", "fileNamer"):
            if fields.get(key) is not None:
                fields[key] = str(fields[key])
        return fields

    @staticmethod
    def _valid_ip(item: str) -> bool:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return False
        return True

    def _save_receiver(self, instance: dict[str, Any], rid: int | None) -> dict[str, Any]:
        """MONO web/src/main/java/org/nrg/dcm/scp/DicomSCPManager.java saveDicomSCPInstance,
        in its order: unknown identifier (incl. null) -> DicomScpUnknownDOIException, 400;
        `AE_TITLE_PATTERN.matcher(aeTitle)` on a null title -> NullPointerException, 500; a bad
        title -> DicomScpInvalidAeTitleException, 400; another receiver (enabled or not) with the
        same AE title AND port -> DICOMReceiverWithDuplicateTitleAndPortException, 400 (not 409);
        a bad whitelist item (AE, IP/CIDR or AE@IP) -> 400. The port is not checked (0 is
        stored) and a different AE on the same port is accepted (the duplicate-port trap)."""
        if instance.get("identifier") not in self.state.dicom_object_identifiers:
            raise HttpError(400, f"Unknown DICOM object identifier: {instance.get('identifier')}")
        ae = instance.get("aeTitle")
        if ae is None:
            raise HttpError(500, "There was an error in the request : NullPointerException")
        if not _AE_TITLE.fullmatch(ae):
            raise HttpError(400, f"Invalid AE-title: {ae}")
        for other_id, other in self.state.receivers.items():
            if other_id != rid and other["aeTitle"] == ae and other["port"] == instance["port"]:
                raise HttpError(
                    400,
                    f"There is already a DICOM SCP receiver with AE title {ae} "
                    f"and port {instance['port']}",
                )
        whitelist: list[str] = []
        for item in instance.get("whitelist") or []:
            if not item.strip():
                continue
            parts = item.split("@")
            if len(parts) == 2:
                ok = self._valid_ip(parts[1]) and bool(_AE_TITLE.fullmatch(parts[0]))
            elif len(parts) == 1:
                ok = self._valid_ip(item) or bool(_AE_TITLE.fullmatch(item))
            else:
                ok = False
            if not ok:
                raise HttpError(400, f"Invalid item in whitelist: {item}")
            if item not in whitelist:
                whitelist.append(item)  # stored as a Set: duplicates dropped
        instance["whitelist"] = whitelist
        if rid is None:
            rid = self.state.next_id("receiver")
        instance["id"] = rid
        instance["timestamp"] = now_ms()
        self.state.receivers[rid] = instance
        return instance

    def scp_list(self, req: Request) -> Response:
        receivers = self.state.receivers
        return json_response([self._receiver_json(receivers[k]) for k in sorted(receivers)])

    def scp_create(self, req: Request) -> Response:
        # MONO web/src/main/java/org/nrg/xapi/rest/dicom/DicomSCPApi.java createDicomSCPInstance:
        # `@RequestBody DicomSCPInstance` (a fresh instance: class defaults for what is left
        # out, no identifier!) -> saveDicomSCPInstance.
        self.require_admin(req)
        instance = {
            **RECEIVER_DEFAULTS,
            "whitelist": [],
            **self._receiver_fields(req.json_object()),
        }
        instance["created"] = now_ms()
        saved = self._save_receiver(instance, None)
        return json_response(self._receiver_json(saved))

    def scp_by_title(self, req: Request, ae: str, port: str) -> Response:
        self.require_admin(req)
        for receiver in self.state.receivers.values():
            if receiver["aeTitle"] == ae and str(receiver["port"]) == port:
                return json_response(self._receiver_json(receiver))
        raise HttpError(404, f"No receiver {ae}:{port}")

    def scp_get(self, req: Request, rid: str) -> Response:
        self.require_admin(req)
        return json_response(self._receiver_json(self._receiver(rid)))

    def scp_put(self, req: Request, rid: str) -> Response:
        self.require_admin(req)
        existing = self._receiver(rid)
        fields = self._receiver_fields(req.json_object())
        if self.state.dicomscp_put_merge:
            # NrgXnat/xnat-web src/main/java/org/nrg/xapi/rest/dicom/DicomSCPApi.java@bff1f28:
            # `_objectMapper.readerForUpdating(existing).readValue(instanceJson)`: a merge.
            instance = {**existing, "whitelist": list(existing["whitelist"]), **fields}
        else:
            # MONO DicomSCPApi.updateDicomSCPInstance: `@RequestBody final DicomSCPInstance
            # instance` ... `instance.setId(id); return _manager.saveDicomSCPInstance(instance);`
            # The body alone is the new receiver: what it leaves out is null/0/the class default
            # (enabled and anonymizationEnabled back to true, no identifier, port 0).
            instance = {**RECEIVER_DEFAULTS, "whitelist": [], **fields}
            instance["created"] = existing.get("created")
        saved = self._save_receiver(instance, int(existing["id"]))
        return json_response(self._receiver_json(saved))

    def scp_delete(self, req: Request, rid: str) -> Response:
        self.require_admin(req)
        self.state.receivers.pop(int(self._receiver(rid)["id"]))
        return text_response("")

    def scp_enabled_get(self, req: Request, rid: str) -> Response:
        self.require_admin(req)
        return json_response(bool(self._receiver(rid)["enabled"]))

    def scp_enabled_put(self, req: Request, rid: str, flag: str) -> Response:
        self.require_admin(req)
        receiver = self._receiver(rid)
        receiver["enabled"] = _bool(flag, "enabled")
        return json_response(self._receiver_json(receiver))

    # -- §11 anonymization -------------------------------------------------------------------------
    # The site and each project script are ONE config-service entry each (contents + status).
    # MONO libs/config/src/main/java/org/nrg/config/services/impl/DefaultConfigService.java:
    # getConfigContents answers the contents only `StringUtils.equals(configuration.getStatus(),
    # ENABLED_STRING)`, and replaceConfig without a status "presume[s] ... it should be enabled".
    # The site entry is mirrored in siteConfig `sitewideAnonymizationScript` +
    # `enableSitewideAnonymizationScript` (MONO AnonymizationHandlerMethod re-applies the flag).
    @staticmethod
    def _enable_param(req: Request) -> bool:
        return _bool(req.query.get("enable", "true"), "enable")  # §11: query param, default true

    @staticmethod
    def _require_content_type(req: Request, wanted: str) -> None:
        # Spring 4.3 `consumes = ...`: another (or no) Content-Type is not matched -> 415, before
        # any authorization or lookup (a request without one counts as application/octet-stream).
        if req.content_type != wanted:
            shown = req.content_type or "application/octet-stream"
            raise HttpError(415, f"Content type '{shown}' not supported")

    def anon_default(self, req: Request) -> Response:
        return text_response(DEFAULT_ANON_SCRIPT)

    def anon_site_get(self, req: Request) -> Response:
        # MONO web/src/main/java/org/nrg/xapi/rest/dicom/AnonymizeApi.java getSiteWideAnonScript
        # (restrictTo = Authenticated) -> AnonUtils.getSiteWideScript() -> getConfigContents:
        # null while the script is disabled, i.e. 200 with an empty body.
        config = self.state.site_config
        if not config.get("enableSitewideAnonymizationScript"):
            return text_response("")
        return text_response(str(config.get("sitewideAnonymizationScript") or ""))

    def anon_site_put(self, req: Request) -> Response:
        # AnonymizeApi `site` PUT: consumes = TEXT_PLAIN_VALUE, restrictTo = Admin.
        self._require_content_type(req, "text/plain")
        self.require_admin(req)
        config = self.state.site_config
        config["sitewideAnonymizationScript"] = req.text()
        if self.state.site_anon_put_reenables:
            # NrgXnat/xnat-web src/main/java/org/nrg/xapi/rest/dicom/AnonymizeApi.java@029e28c:
            # `_anonUtils.setSiteWideScript(...)` -> replaceConfig without a status -> enabled.
            config["enableSitewideAnonymizationScript"] = True
        # else MONO: `_preferences.setSitewideAnonymizationScript(script)`; the handler stores
        # the script and re-applies the enable preference, so the flag stays as it was.
        return text_response("")

    def anon_site_enabled_get(self, req: Request) -> Response:
        return json_response(bool(self.state.site_config.get("enableSitewideAnonymizationScript")))

    def anon_site_enabled_put(self, req: Request) -> Response:
        # MONO AnonymizeApi (and NrgXnat/xnat-web AnonymizeApi.java@029e28c):
        # `value = "site/enabled", consumes = APPLICATION_JSON_VALUE, method = PUT`; the value is
        # the `enable` request parameter (default true), the body may be empty.
        self._require_content_type(req, JSON)
        self.require_admin(req)
        self.state.site_config["enableSitewideAnonymizationScript"] = self._enable_param(req)
        return text_response("")

    def anon_project_get(self, req: Request, pid: str) -> Response:
        # MONO AnonymizeApi.getProjectAnonScript (restrictTo = Read): a blank script ->
        # NoContentException (204). getProjectScript goes through getConfigContents, so a
        # DISABLED script also reads as none: 204.
        project = self._readable_project(req, pid)
        if not project.anon_script or not project.anon_enabled:
            return Response(204, b"", None)
        return text_response(project.anon_script)

    def anon_project_put(self, req: Request, pid: str) -> Response:
        # MONO AnonymizeApi.setProjectAnonScript (consumes TEXT_PLAIN, restrictTo = Delete) ->
        # DefaultAnonUtils.setProjectScript -> `_configService.replaceConfig(login, "", ...,
        # script, Scope.Project, projectId)` with no status: every write re-enables the script.
        self._require_content_type(req, "text/plain")
        project = self.owned_project(req, pid)
        project.anon_script = req.text()
        project.anon_enabled = True
        return text_response("")

    def anon_project_enabled_get(self, req: Request, pid: str) -> Response:
        project = self._readable_project(req, pid)
        return json_response(project.anon_script is not None and project.anon_enabled)

    def anon_project_enabled_put(self, req: Request, pid: str) -> Response:
        # MONO AnonymizeApi `projects/{projectId}/enabled`: consumes = APPLICATION_JSON_VALUE
        # (415 otherwise). DefaultConfigService.setStatusImpl on a project that never had a
        # script: ConfigServiceException("Couldn't find the site configuration ...") -> 500.
        self._require_content_type(req, JSON)
        project = self.owned_project(req, pid)
        if project.anon_script is None:
            raise HttpError(
                500,
                "An error occurred when accessing the configuration service: Couldn't find the "
                f"site configuration for tool anon and path projects/{pid} with scope Project",
            )
        project.anon_enabled = self._enable_param(req)
        return text_response("")

    # -- §12 event service -------------------------------------------------------------------------
    # MONO web/src/main/java/org/nrg/xnat/eventservice/services/impl/EventServiceImpl.java:
    # create, update, delete and get-by-id call throwIfDisabled() ->
    # SubscriptionAccessException("Event Service disabled."), @ResponseStatus(METHOD_NOT_ALLOWED)
    # (web/.../eventservice/exceptions/SubscriptionAccessException.java): 405.
    def _subscription(self, sid: str) -> dict[str, Any]:
        sub = self.state.subscriptions.get(int(sid)) if sid.isdigit() else None
        if sub is None:
            raise HttpError(404, f"No subscription {sid}")
        return sub

    def _require_event_service(self) -> None:
        if not self.state.events_prefs.get("enabled"):
            raise HttpError(405, "Event Service disabled.")  # docs/xnat-api.md §12

    def events_prefs_get(self, req: Request) -> Response:
        # MONO web/.../eventservice/rest/EventServiceRestApi.java: GET restrictTo = Authenticated
        return json_response(self.state.events_prefs)

    def events_prefs_put(self, req: Request) -> Response:
        # EventServiceRestApi.updatePrefs: `@RequestBody EventServicePrefs`,
        # ResponseEntity.ok().build() (no body).
        self.require_admin(req)
        body = req.json_object()
        if "enabled" in body:
            body["enabled"] = _bool(body["enabled"], "enabled")
        self.state.events_prefs.update(body)
        return empty_response(200)

    def subscriptions_list(self, req: Request) -> Response:
        # EventServiceImpl.getSubscriptions(): `if (!prefs.getEnabled()) { return null; }`, which
        # Spring writes as 200 with an EMPTY body (not `[]`).
        self.require_admin(req)
        if not self.state.events_prefs.get("enabled"):
            return empty_response(200)
        subs = self.state.subscriptions
        return json_response([subs[k] for k in sorted(subs)])

    def subscription_create(self, req: Request, pid: str | None = None) -> Response:
        if pid is None:
            self.require_admin(req)
        else:
            self.owned_project(req, pid)  # restrictTo = Delete on the project
        body = req.json_object()
        self._require_event_service()
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise HttpError(400, "Subscription name is required")
        if pid is not None:  # §12 per-project create
            event_filter = dict(body.get("event-filter") or {})
            event_filter["project-ids"] = [pid]
            body["event-filter"] = event_filter
        # docs/xnat-api.md §12: duplicates are NOT rejected; the server adds these fields.
        sid = self.state.next_id("subscription")
        body.setdefault("active", True)
        body.update(
            {
                "id": sid,
                "subscription-owner": req.username,
                "valid": True,
                "validation-message": "",
                "created": now_ms(),
            }
        )
        self.state.subscriptions[sid] = body
        # EventServiceRestApi.createSubscription: `created.name() + ":" + created.id()`, 201.
        return text_response(f"{name}:{sid}", 201)

    def subscription_get(self, req: Request, sid: str) -> Response:
        self.require_admin(req)
        self._require_event_service()
        return json_response(self._subscription(sid))

    def subscription_put(self, req: Request, sid: str) -> Response:
        # EventServiceRestApi.updateSubscription: getSubscription + updateSubscription (both
        # 405 while disabled), `@RequestBody SubscriptionUpdate`, ResponseEntity.ok().build().
        self.require_admin(req)
        self._require_event_service()
        sub = self._subscription(sid)
        body = req.json_object()
        for key in ("id", "subscription-owner", "created"):  # server-owned fields
            body.pop(key, None)
        sub.update({k: v for k, v in body.items() if v is not None})
        return empty_response(200)

    def subscription_delete(self, req: Request, sid: str) -> Response:
        self.require_admin(req)
        self._require_event_service()
        self.state.subscriptions.pop(int(self._subscription(sid)["id"]))
        return Response(204, b"", None)  # ResponseEntity.noContent()

    def subscription_activate(self, req: Request, sid: str, action: str) -> Response:
        self.require_admin(req)
        if action not in ("activate", "deactivate"):
            raise HttpError(404, "Not found")
        self._subscription(sid)["active"] = action == "activate"
        return empty_response(200)

    # -- §13 container service ---------------------------------------------------------------------
    def is_container_manager(self, req: Request) -> bool:
        # CS src/main/java/org/nrg/containers/utils/ContainerServicePermissionUtils.java
        # isContainerManager: `Roles.checkRole(userI, CONTAINER_MANAGER_ROLE)`: no admin bypass.
        user = req.user
        roles = set(user.roles) if user else set()
        if not self.state.commands_require_container_manager and "Administrator" in roles:
            return True
        return "ContainerManager" in roles

    def require_container_manager(self, req: Request, *, status: int = 403) -> None:
        # 403: @AuthDelegate(ContainerManagerUserAuthorization.class) (site wrapper and docker
        # mappings). 401: CommandRestApi.checkContainerManagerOrThrow -> UnauthorizedException,
        # @ResponseStatus(UNAUTHORIZED) (command create/update/delete).
        if not self.is_container_manager(req):
            raise HttpError(status, f"User {req.username} is not a Container Manager.")

    def docker_get(self, req: Request) -> Response:
        # CS src/main/java/org/nrg/containers/rest/DockerRestApi.java: `/server` GET has no
        # restriction; POST is @AuthDelegate(ContainerManagerUserAuthorization), 201.
        return json_response(self.state.docker_server)

    def docker_post(self, req: Request) -> Response:
        self.require_container_manager(req)
        body = req.json_object()
        if not body.get("host"):
            raise HttpError(400, "host is required")
        body.pop("ping", None)  # DockerServerWithPing's echo: an unknown property, ignored
        self.state.docker_server = {**body, "id": 1}
        return json_response(self.state.docker_server, 201)

    def docker_ping(self, req: Request) -> Response:
        return text_response("OK")

    def _command(self, cid: str) -> dict[str, Any]:
        command = self.state.commands.get(int(cid)) if cid.isdigit() else None
        if command is None:
            raise HttpError(404, f"No command {cid}")
        return command

    def _validated_command(self, req: Request) -> dict[str, Any]:
        body = req.json_object()
        wrappers = body.get("xnat")
        ok = isinstance(body.get("name"), str) and body["name"] and isinstance(wrappers, list)
        if not ok or not all(isinstance(w, dict) and w.get("name") for w in wrappers or []):
            raise HttpError(400, "A command needs `name` and `xnat` (wrappers with `name`)")
        for wrapper in body["xnat"]:
            wrapper["id"] = self.state.next_id("wrapper")  # server assigns wrapper ids
        return body

    def _visible(self, req: Request, command: dict[str, Any]) -> bool:
        # CommandRestApi.filter: a non-manager sees public and protected commands only.
        if self.is_container_manager(req):
            return True
        return str(command.get("visibility") or "").lower() in ("public", "protected")

    def commands_list(self, req: Request) -> Response:
        # CommandRestApi.getCommands: no role needed; the list is filtered for non-managers.
        commands = [self.state.commands[k] for k in sorted(self.state.commands)]
        if "name" in req.query:
            commands = [c for c in commands if c.get("name") == req.query["name"]]
        return json_response([c for c in commands if self._visible(req, c)])

    def command_create(self, req: Request) -> Response:
        self.require_container_manager(req, status=401)
        body = self._validated_command(req)
        cid = self.state.next_id("command")
        body["id"] = cid
        self.state.commands[cid] = body
        # CommandRestApi.createCommand: ResponseEntity<Long>(created.id(), CREATED) (§13)
        return Response(201, str(cid).encode(), JSON)

    def command_get(self, req: Request, cid: str) -> Response:
        command = self._command(cid)
        if not self._visible(req, command):
            return empty_response(200)  # filter(...) -> null
        return json_response(command)

    def command_update(self, req: Request, cid: str) -> Response:
        self.require_container_manager(req, status=401)
        old = self._command(cid)
        body = self._validated_command(req)  # docs/xnat-api.md §13: update is a full replace
        body["id"] = old["id"]
        self.state.commands[old["id"]] = body
        return empty_response(200)

    def command_delete(self, req: Request, cid: str) -> Response:
        self.require_container_manager(req, status=401)
        # docs/xnat-api.md §13 quirk: deleting a missing command reports success (204).
        if cid.isdigit():
            self.state.commands.pop(int(cid), None)
        return Response(204, b"", None)

    def _wrapper_key(self, cid: str, wrapper: str) -> tuple[int, str]:
        command = self._command(cid)
        for w in command["xnat"]:
            if wrapper in (w["name"], str(w["id"])):
                return command["id"], w["name"]
        raise HttpError(404, f"No wrapper {wrapper} in command {cid}")

    def _project_permission(self, req: Request, pid: str, level: str) -> Project:
        # CS src/main/java/org/nrg/containers/rest/CommandConfigurationRestApi.java
        # checkPermissionsOrThrow: a container manager passes, else the project access level
        # (Edit for reads, Delete for writes) or UnauthorizedException -> 401.
        project = self.project_or_404(pid)
        if self.is_container_manager(req):
            return project
        allowed = self.can_edit if level == "Edit" else self.can_own
        if not allowed(req.user, project):
            raise HttpError(401, f"User {req.username} does not have {level} access.")
        return project

    def wrapper_enabled_get(self, req: Request, cid: str, wrapper: str) -> Response:
        # CommandConfigurationRestApi `/commands/{id}/wrappers/{name}/enabled` GET -> Boolean
        self.require_container_manager(req)
        return json_response(self._wrapper_key(cid, wrapper) in self.state.wrappers_enabled)

    def project_wrapper_enabled_get(
        self, req: Request, pid: str, cid: str, wrapper: str
    ) -> Response:
        # CommandConfigurationRestApi.isConfigurationEnabled(project, ...) returns a
        # ProjectEnabledReport (CS src/main/java/org/nrg/containers/model/configuration/
        # ProjectEnabledReport.java): {"enabled-for-site", "enabled-for-project", "project"},
        # not a bare boolean.
        project = self._project_permission(req, pid, "Edit")
        key = self._wrapper_key(cid, wrapper)
        return json_response(
            {
                "enabled-for-site": key in self.state.wrappers_enabled,
                "enabled-for-project": key in project.wrappers_enabled,
                "project": project.id,
            }
        )

    def wrapper_enabled_put(
        self, req: Request, cid: str, wrapper: str, state: str, pid: str | None = None
    ) -> Response:
        if state not in ("enabled", "disabled"):
            raise HttpError(404, "Not found")
        if pid is None:
            self.require_container_manager(req)
            target = self.state.wrappers_enabled
        else:
            target = self._project_permission(req, pid, "Delete").wrappers_enabled
        key = self._wrapper_key(cid, wrapper)
        if state == "enabled":
            target.add(key)
        else:
            target.discard(key)
        return empty_response(200)

    # -- §14 plugins -------------------------------------------------------------------------------
    def plugins_list(self, req: Request) -> Response:
        # MONO web/src/main/java/org/nrg/xapi/rest/XnatPluginApi.java getAllPlugins:
        # Map<String, XnatPluginBean> keyed by plugin id (Xsync's id is "xsyncPlugin").
        return json_response(self.state.plugins)

    def plugin_get(self, req: Request, plugin: str) -> Response:
        if plugin not in self.state.plugins:
            raise HttpError(404, f"No plugin {plugin}")
        return json_response(self.state.plugins[plugin])

    # -- §16 Xsync ---------------------------------------------------------------------------------
    # Two plugin builds (State.xsync_build). "java8" (builds for XNAT <= 1.9, e.g. 1.8.1): setup,
    # credentials save/check and site preferences POST are `consumes = TEXT_PLAIN`
    # (XS src/main/java/org/nrg/xsync/xapi/XsyncRemoteCredentialsController.java@005d956,
    # XsyncSetupController, XsyncPreferencesController). "java21" (builds for XNAT 1.10): all four
    # are APPLICATION_JSON with typed pojos (XsyncSetupController.java@0271dcb,
    # XsyncPreferencesController.java@43cc5f3, the Java-21 XsyncRemoteCredentialsController).
    def _xsync_json_build(self) -> bool:
        return self.state.xsync_build == "java21"

    def _require_xsync_content_type(self, req: Request) -> None:
        self._require_content_type(req, JSON if self._xsync_json_build() else "text/plain")

    def _xsync_body(self, req: Request) -> dict[str, Any]:
        """The JSON document, sent as text (Java 8: `@RequestBody String jsonbody` parsed with an
        ObjectMapper; a parse error is caught -> 500) or bound to a pojo (Java 21: 400)."""
        try:
            data = json.loads(req.body or b"null")
        except ValueError as exc:
            status = 400 if self._xsync_json_build() else 500
            raise HttpError(status, "Could not parse the request body") from exc
        if not isinstance(data, dict):
            raise HttpError(400 if self._xsync_json_build() else 500, "Expected a JSON object")
        return data

    def _configured(self, pid: str) -> dict[str, Any]:
        config = self.state.xsync_configs.get(pid)
        if config is None:
            raise HttpError(404, f"Project {pid} is not configured for Xsync")
        return config

    def _require_xsync_admin(self, req: Request) -> None:
        if self._xsync_json_build():
            # XS src/main/java/org/nrg/xsync/security/XsyncAdministratorUserAuthorization.java
            # @56e9475: `Roles.checkRole(user, XsyncUtils.XSYNC_ADMINISTRATOR_ROLE)`; MONO
            # AbstractXapiAuthorization.check has no site-admin bypass.
            if req.user is None or "XsyncAdministrator" not in req.user.roles:
                raise HttpError(403, "The XsyncAdministrator role is required")
        else:
            # Java-8 builds: isPermitted() / restrictTo = Admin.
            self.require_admin(req)

    def xsync_prefs_get(self, req: Request) -> Response:
        self._require_xsync_admin(req)
        prefs = self.state.xsync_site_prefs
        if self._xsync_json_build():
            return json_response(prefs)  # XsyncSitePreferencesPojo
        # Java 8: a java.util.Properties of strings.
        shown = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in prefs.items()}
        return json_response(shown)

    def _check_xsync_pref(self, key: str, value: Any) -> None:
        # XS src/main/java/org/nrg/xsync/components/XsyncSitePreferencesBean.java@024dea2:
        # intervals need `<N> hour(s)|minute(s)` and at least 300000 ms; the size must be -1 or a
        # positive integer (throwForInvalidMaxSizePreference). A failing setter is a 500: Java 8
        # catches it ("XSync preferences assignment failed"), Java 21 throws
        # InvalidValueException (an XftItemException -> 500 in MONO XapiRestControllerAdvice).
        message = "XSync preferences assignment failed "
        if key in ("tokenRefreshInterval", "syncRetryInterval"):
            m = _XSYNC_INTERVAL.match(str(value))
            unit = 3600 if m and m.group(2).lower() == "hour" else 60
            if not m or int(m.group(1)) * unit < 300:
                raise HttpError(500, message)
        if key == "syncMaxUncompressedZipFileSize":
            try:
                size = int(str(value))
            except ValueError as exc:
                raise HttpError(500, message) from exc
            if size < -1 or size == 0:
                raise HttpError(500, message)

    def xsync_prefs_post(self, req: Request) -> Response:
        self._require_xsync_content_type(req)
        self._require_xsync_admin(req)
        body = self._xsync_body(req)
        known = {k: v for k, v in body.items() if k in XSYNC_SITE_PREFS_DEFAULTS}
        for key, value in known.items():
            self._check_xsync_pref(key, value)
        if not self._xsync_json_build():
            # Java-8 builds store the values as the strings they read (`.asText()`).
            known = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in known.items()}
        self.state.xsync_site_prefs.update(known)
        if self._xsync_json_build():
            return empty_response(200)  # `public void setPreferences(...)`
        return text_response("XSync preferences set")

    def xsync_setup_get(self, req: Request, pid: str) -> Response:
        self.owned_project(req, pid)
        config = self.state.xsync_configs.get(pid)
        if config is None:
            if self._xsync_json_build():
                # XsyncSetupController.java@0271dcb: `new ResponseEntity<>(
                # _xsyncConfigService.getSyncConfiguration(projectId), HttpStatus.OK)`: 200
                # (nothing stored: a null body, written as an empty one).
                return empty_response(200)
            # Java 8: `new ResponseEntity<JsonNode>(HttpStatus.NOT_FOUND)` when nothing stored.
            return empty_response(404)
        return json_response(config)

    def xsync_setup_post(self, req: Request, pid: str) -> Response:
        self._require_xsync_content_type(req)
        self.owned_project(req, pid)  # §16.3: needs Owner/admin on the relay project
        body = self._xsync_body(req)
        if body.get("source_project_id") != pid:
            # docs/xnat-api.md §16.3 [VER]: source_project_id must equal the path project.
            raise HttpError(400, "source_project_id must match the project in the path")
        if not body.get("remote_url") or not body.get("remote_project_id"):
            raise HttpError(400, "remote_url and remote_project_id are required")
        self.state.xsync_configs[pid] = body
        return text_response("")

    def _remote_get(self, url: str, alias: str, secret: str) -> requests.Response:
        """What the plugin does: an HttpURLConnection GET with `Authorization: Basic
        base64(alias:secret)` (the alias token as HTTP Basic credentials)."""
        return requests.get(
            url,
            auth=(alias, secret),
            timeout=REMOTE_TIMEOUT,
            verify=self.state.xsync_remote_verify,
            allow_redirects=False,
        )

    def _remote_access(self, body: dict[str, Any]) -> tuple[int, str]:
        """XsyncRemoteCredentialsController.userHasRequiredAccessAtRemoteProject (XS @005d956):
        GET {host}/data/archive/projects/{remoteProject}/users?format=json with the token; a
        404 (FileNotFoundException) -> 403 "User does not have access to the project"; any
        other failure to read it, a refused connection included (IOException) -> 403; an
        unreadable answer -> 400 "Could not connect". Then the row whose `login` is the given
        username decides: `_member` 202, `_collaborator` 403, `_owner` 200, other 202; no such
        row although the list was readable -> 202 ("may have All Data Access")."""
        host = str(body["host"])
        username = str(body["username"])
        remote_project = str(body.get("remoteProject"))
        url = (host if host.endswith("/") else host + "/") + (
            f"data/archive/projects/{remote_project}/users?format=json"
        )
        try:
            resp = self._remote_get(url, str(body["alias"]), str(body["secret"]))
        except requests.RequestException:
            return 403, f"User {username} probably has Collaborator level access. Xsync will fail."
        if resp.status_code == 404:
            return 403, f"User does not have access to the project {remote_project}"
        if resp.status_code >= 300:
            return 403, f"User {username} probably has Collaborator level access. Xsync will fail."
        try:
            rows = resp.json()["ResultSet"]["Result"]
            if not isinstance(rows, list):
                raise TypeError("Result is not a list")
        except (ValueError, KeyError, TypeError):
            return 400, "Could not connect"
        for row in rows:
            if isinstance(row, dict) and row.get("login") == username:
                level = str(row.get("GROUP_ID", ""))
                if level.endswith("_member"):
                    return 202, f"User  {username} has Member level access"
                if level.endswith("_collaborator"):
                    return 403, f"User  {username} has Collaborator level access"
                if level.endswith("_owner"):
                    return 200, f"User {username} has CRUD access."
                return 202, f"User  {username} has access."
        return 202, f"User  {username} may have All Data Access."

    def xsync_save(self, req: Request, pid: str) -> Response:
        # XS XsyncRemoteCredentialsController.saveRemoteCredentials (@005d956; the Java-21 one
        # answers the same statuses): host, alias, secret, localProject and username are
        # required (400 "Incomplete information supplied."); the caller must be able to edit
        # the project; the stored credential is keyed by (localProject, host).
        required = ("host", "alias", "secret", "localProject", "username")
        with self.state.lock:
            self._require_xsync_content_type(req)
            body = self._xsync_body(req)
            if any(not str(body.get(k) or "") for k in required):
                raise HttpError(
                    400, "Could not save remote credentials.  Incomplete information supplied."
                )
            self.owned_project(req, str(body["localProject"]))
        status, message = self._remote_access(body)
        if status not in (200, 202):
            return text_response(message, status)
        with self.state.lock:
            self.state.xsync_credentials[(str(body["localProject"]), str(body["host"]))] = {
                "alias": body["alias"],
                "secret": body["secret"],
                "username": body["username"],
                "remoteProject": body.get("remoteProject"),
                "syncNewOnly": body.get("syncNewOnly"),
                "estimatedExpirationTime": body.get("estimatedExpirationTime"),
            }
        if status == 202:
            return text_response(
                f"User  {body['username']} does not have Owner level access to "
                f"{body.get('remoteProject')}. Data Deletion will fail if the user has Member "
                "level access.",
                202,
            )
        return text_response("XSync remote credentials set.")

    def xsync_check(self, req: Request, pid: str) -> Response:
        # XS XsyncRemoteCredentialsController.checkRemoteCredentials: GET {host}/data/JSESSIONID
        # with the stored alias token as Basic auth; 200 answers the session id, any failure
        # 400 "Could not connect". Nothing stored: Java 8 dereferences null (caught) -> 400
        # "Could not connect"; Java 21 -> 403 "Check project configuration".
        with self.state.lock:
            self._require_xsync_content_type(req)
            body = self._xsync_body(req)
            host, local = str(body.get("host") or ""), str(body.get("localProject") or "")
            if not host or not local:
                raise HttpError(
                    400, "Could not check remote credentials.  Incomplete information supplied."
                )
            self.owned_project(req, local)
            cred = self.state.xsync_credentials.get((local, host))
            if cred is None:
                if self._xsync_json_build():
                    raise HttpError(403, "Check project configuration")
                raise HttpError(400, "Could not connect")
            cred = dict(cred)
        try:
            resp = self._remote_get(host + "/data/JSESSIONID", cred["alias"], cred["secret"])
        except requests.RequestException as exc:
            raise HttpError(400, "Could not connect") from exc
        if resp.status_code != 200:
            raise HttpError(400, "Could not connect")
        return text_response(resp.text)

    def xsync_remote_rest(self, req: Request) -> Response:
        with self.state.lock:
            self.require_admin(req)
        body = req.json_object()
        if any(not body.get(k) for k in ("url", "method", "username", "password")):
            raise HttpError(400, "url, method, username and password are required")
        # docs/xnat-api.md §16.4 step 1: performs the call on the remote, answers its body as text.
        # Passing the remote status through is [INFERRED].
        try:
            resp = requests.request(
                str(body["method"]).upper(),
                str(body["url"]),
                auth=(str(body["username"]), str(body["password"])),
                timeout=REMOTE_TIMEOUT,
                verify=self.state.xsync_remote_verify,
            )
        except requests.RequestException as exc:
            raise HttpError(400, "Could not connect to the remote host") from exc
        return text_response(resp.text, resp.status_code)

    def xsync_projects(self, req: Request) -> Response:
        self.require_admin(req)
        configs = self.state.xsync_configs
        return json_response([configs[k] for k in sorted(configs)])

    def xsync_sync_now(self, req: Request, pid: str) -> Response:
        self.owned_project(req, pid)
        self._configured(pid)
        self.state.xsync_sync_requests.append(pid)
        return text_response(f"{pid} synchronization started")  # §16.5 text reply

    def xsync_status(self, req: Request, pid: str) -> Response:
        # XS src/main/java/org/nrg/xsync/xapi/XsyncStatusController.java@76a6e0b:
        # `@RequestMapping("/xsync/syncStatus")` + `/projects/{projectId}`, canReadProject only
        # (no "configured" check), answers the node's in-memory ProjectSyncStatus
        # (SyncStatusHolder makes a fresh one per project: syncType NONE_SINCE_STARTUP).
        self._readable_project(req, pid)
        stored = self.state.xsync_status.get(pid, {})
        status = dict(PROJECT_SYNC_STATUS_DEFAULTS)
        status.update({k: v for k, v in stored.items() if k in PROJECT_SYNC_STATUS_DEFAULTS})
        for key in ("syncStartTime", "syncEndTime"):
            status[key] = _xsync_status_time(status[key])
        return json_response(_non_null(status))

    def xsync_unblock(self, req: Request, pid: str) -> Response:
        self.owned_project(req, pid)
        self._configured(pid)  # docs/xnat-api.md §16.5: 404 when the project is not configured
        self.state.xsync_blocked.pop(pid, None)
        return text_response(f"{pid} unblocked")

    def xsync_history(self, req: Request, pid: str | None = None) -> Response:
        # XS src/main/java/org/nrg/xsync/xapi/XsyncHistoryController.java@00ee529: all history
        # needs isPermitted() (admin); per project canReadProject, filtered on
        # `history.getLocalProject().equals(projectId)`. Rows: XsyncProjectHistory.
        if pid is None:
            self.require_admin(req)
            return json_response(self.state.xsync_history)
        self._readable_project(req, pid)
        return json_response([h for h in self.state.xsync_history if h.get("localProject") == pid])

    # -- dispatch ----------------------------------------------------------------------------------
    def dispatch(self, req: Request) -> Response:
        state = self.state
        auth = req.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                username, _, password = b64decode(auth[6:].strip()).decode().partition(":")
            except ValueError:
                return text_response("Bad Authorization header", 401)
            with state.lock:
                req.user = self.authenticate(username, password)
            if req.user is None:
                # docs/xnat-api.md §6: bad credentials (e.g. admin:admin after rotation) -> 401
                # (MONO XnatBasicAuthenticationFilter: sendError(SC_UNAUTHORIZED, ...)).
                return text_response("Bad username or password", 401)
        elif req.session_id:
            with state.lock:
                req.user = self.session_user(req.session_id)
            if req.user is None:
                req.session_id = None
        route, params, path_known = self.match(req.method, req.path)
        if req.user is None and (route is None or not route.anonymous):
            # MONO XnatAuthenticationEntryPoint: 401 on data paths for non-browser agents.
            return text_response("Authentication required", 401)
        if not state.site_config.get("initialized"):
            open_url = req.user is None and route is not None and route.anonymous
            if not open_url and (route is None or not route.pre_init):
                return self.setup_page()  # docs/xnat-api.md §6: 200 + text/html before init
        if route is None:
            if path_known:
                return text_response("Method not allowed", 405)
            return text_response("Not found", 404)
        try:
            if route.remote:
                return route.handler(req, **params)
            with state.lock:
                return route.handler(req, **params)
        except HttpError as exc:
            return text_response(exc.message, exc.status)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "xnat-fleet-standin"
    sys_version = ""
    timeout = 30
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    standin: XnatStandin  # set on the per-instance subclass

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: nothing on stdout/stderr during tests."""

    def _handle(self) -> None:
        standin = self.standin
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        session_id = None
        try:
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
            if "JSESSIONID" in cookie:
                session_id = cookie["JSESSIONID"].value
        except CookieError:
            session_id = None
        req = Request(self.command, path, query, self.headers, body, session_id=session_id)
        try:
            resp = standin.api.dispatch(req)
        except Exception:  # a stand-in bug must still answer, not hang the client
            resp = text_response("Internal Server Error (stand-in)", 500)
        standin.requests_log.append((self.command, _redact(path), resp.status))
        self.send_response(resp.status)
        self.send_header("X-Standin", "xnat-fleet")
        if resp.status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="XNAT"')
        if resp.status in (204, 304):
            resp.body = b""  # no body on 204/304 (HTTP)
        elif resp.content_type is not None:
            self.send_header("Content-Type", resp.content_type)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if resp.body and self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket, Any]:
        sock, addr = self.socket.accept()
        if self.ssl_context is not None:
            # Handshake later, in the request thread, so a slow client cannot block accept().
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(_Handler.timeout)
            request.do_handshake()
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent (TLS handshake failures, client resets): tests must not print to stderr."""


class XnatStandin:
    """An XNAT REST stand-in for xnat-fleet tests — NOT XNAT.

    ``with XnatStandin(profile="1.10", xsync=True) as xnat: requests.get(xnat.url + "/")``

    ``profile`` is a key of :data:`tests.xnat_standin.state.STANDIN_PROFILES`; without one the
    settings follow ``version``. ``xsync_build``, ``xsync_plugin_version``,
    ``dicomscp_put_merge``, ``site_anon_put_reenables`` and ``smtp_post_500`` override single
    settings (see :func:`tests.xnat_standin.state.new_state`).
    """

    def __init__(
        self,
        *,
        profile: str | None = None,
        version: str | None = None,
        xsync: bool = False,
        xsync_build: str | None = None,
        xsync_plugin_version: str | None = None,
        dicomscp_put_merge: bool | None = None,
        site_anon_put_reenables: bool | None = None,
        smtp_post_500: bool | None = None,
        initial_admin_password: str = "admin",
        name: str = "xnat",
    ) -> None:
        self.state: State = new_state(
            profile=profile,
            version=version,
            xsync=xsync,
            xsync_build=xsync_build,
            xsync_plugin_version=xsync_plugin_version,
            dicomscp_put_merge=dicomscp_put_merge,
            site_anon_put_reenables=site_anon_put_reenables,
            smtp_post_500=smtp_post_500,
            initial_admin_password=initial_admin_password,
            name=name,
        )
        self.api = Api(self.state)
        self.requests_log: list[tuple[str, str, int]] = []
        self.url = ""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> str:
        """Serve in a background thread; returns the base URL (no trailing slash)."""
        if self._server is not None:
            raise RuntimeError("stand-in already started")
        handler = type("Handler", (_Handler,), {"standin": self})
        server = _Server((host, port), handler)
        server.ssl_context = ssl_context
        self._server = server
        bound_port = server.server_address[1]
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://{host}:{bound_port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"xnat-standin-{self.state.name}",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> XnatStandin:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
