"""HTTP layer of the XNAT REST stand-in — for xnat-fleet TESTS only, this is NOT XNAT.

A stdlib ``ThreadingHTTPServer`` that serves the XNAT REST endpoints the reconcilers use, with the
status codes, content types and quirks documented in ../shared/design/xnat-facts.md §6-§16 (each
route and quirk cites its section). State lives in :mod:`tests.xnat_standin.state`, which tests
read and mutate directly. Every response carries ``X-Standin: xnat-fleet``.

Runnable for demos: ``python -m tests.xnat_standin --port 8080 [--version V] [--xsync]``.
"""

from __future__ import annotations

import html
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
    RECEIVER_DEFAULTS,
    SITE_GROUPS,
    AliasToken,
    Project,
    State,
    User,
    interval_seconds,
    new_state,
    now_ms,
)

STANDIN_NOTICE = "XNAT REST stand-in for xnat-fleet tests — NOT XNAT"
XNAT_NS = "http://nrg.wustl.edu/xnat"
JSON = "application/json"
TEXT = "text/plain;charset=UTF-8"
HTML = "text/html;charset=UTF-8"
REMOTE_TIMEOUT = 10.0


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
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode(), JSON)


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), TEXT)


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


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., Response]
    anonymous: bool = False  # served without credentials
    pre_init: bool = False  # served before initialisation (xnat-facts.md §6)
    xsync: bool = False  # only when the Xsync plugin is "installed" (xnat-facts.md §16)
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
    """Alias secrets travel in token paths (xnat-facts.md §6): keep them out of the log."""
    if path.startswith("/data/services/tokens/issue/user/"):
        return path
    return _TOKEN_PATH.sub(r"\1(secret)", path)


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
        a("POST", "/data/JSESSION", self.jsession, anonymous=True, pre_init=True)
        a("GET", "/data/JSESSIONID", self.jsession, pre_init=True)
        a("DELETE", "/data/JSESSION", self.jsession_delete, pre_init=True)
        a("GET", "/data/services/tokens/issue", self.token_issue)
        a("GET", "/data/services/tokens/issue/user/{username}", self.token_issue_user)
        a("GET", "/data/services/tokens/issue/{alias}/{secret}", self.token_refresh)
        a("GET", "/data/services/tokens/validate/{alias}/{secret}", self.token_validate)
        a("GET", "/data/services/tokens/invalidate/{alias}/{secret}", self.token_invalidate)
        # §7 site configuration
        a("GET", "/xapi/siteConfig", self.site_config_get, pre_init=True)
        a("POST", "/xapi/siteConfig", self.site_config_post, pre_init=True)
        a("GET", "/xapi/siteConfig/initialized", self.initialized, anonymous=True, pre_init=True)
        a("GET", "/xapi/siteConfig/buildInfo", self.build_info)
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
        a("GET", "/xapi/notifications/smtp", self.smtp_get)
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
        a("PUT", "/xapi/commands/{cid}", self.command_put)
        a("DELETE", "/xapi/commands/{cid}", self.command_delete)
        w = "/xapi/commands/{cid}/wrappers/{wrapper}"
        pw = "/xapi/projects/{pid}/commands/{cid}/wrappers/{wrapper}"
        a("GET", w + "/enabled", self.wrapper_enabled_get)
        a("PUT", w + "/{state}", self.wrapper_enabled_put)
        a("GET", pw + "/enabled", self.wrapper_enabled_get)
        a("PUT", pw + "/{state}", self.wrapper_enabled_put)
        # §14 plugins
        a("GET", "/xapi/plugins", self.plugins_list)
        a("GET", "/xapi/plugins/{plugin}", self.plugin_get)
        # §16 Xsync (404 unless constructed with xsync=True)
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

    # -- authentication (xnat-facts.md §6) -----------------------------------------------------
    def authenticate(self, username: str, password: str) -> User | None:
        """Basic auth: an enabled user's password, or a usable alias token's alias:secret."""
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

    # -- / ----------------------------------------------------------------------------------------
    def root(self, req: Request) -> Response:
        state = self.state
        if not state.site_config.get("initialized"):
            return self.setup_page()
        return _html_page(
            "XNAT stand-in",
            f"<p>name: {state.name}; emulated XNAT version: {state.version}; "
            f"Xsync: {'yes' if state.xsync else 'no'}</p>",
        )

    @staticmethod
    def setup_page() -> Response:
        # xnat-facts.md §6 "A JSON endpoint answering 200 with text/html is the setup/login page".
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
            # xnat-facts.md §6: invalidated (or expired) tokens get 401.
            raise HttpError(401, "Invalid or expired alias token")
        return token

    def token_issue(self, req: Request) -> Response:
        return json_response(self._token_json(self.state.issue_token(req.username)))

    def token_issue_user(self, req: Request, username: str) -> Response:
        self.require_admin(req)  # xnat-facts.md §6: an admin can issue for another user
        self.user_or_404(username)
        return json_response(self._token_json(self.state.issue_token(username)))

    def token_refresh(self, req: Request, alias: str, secret: str) -> Response:
        # xnat-facts.md §16.6: Xsync refreshes with the *current* token; same user, new token.
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
        if coerced.get("initialized") and not config.get("initialized"):
            # xnat-facts.md §6 step 3 / §4: siteId, siteUrl, adminEmail must be set to initialise.
            merged = {**config, **coerced}
            missing = [k for k in INIT_REQUIRED_KEYS if not str(merged.get(k) or "").strip()]
            if missing:
                raise HttpError(400, "Missing required settings: " + ", ".join(missing))
        # xnat-facts.md §6 step 3: other keys first, then `initialized` (fires the init handlers).
        initialized = coerced.pop("initialized", None)
        config.update(coerced)
        if initialized is not None:
            config["initialized"] = initialized

    def site_config_get(self, req: Request) -> Response:
        if req.user is None or not req.user.is_admin:
            if not self.state.site_config.get("initialized"):
                return json_response({})  # xnat-facts.md §6 step 2: `{}` to non-admins pre-init
            raise HttpError(403, "Administrator access required")
        return json_response(self.state.site_config)

    def site_config_post(self, req: Request) -> Response:
        self.require_admin(req)
        if req.content_type == "application/x-www-form-urlencoded":  # §7 "JSON or form"
            updates: dict[str, Any] = {k: v[-1] for k, v in parse_qs(req.text()).items()}
        else:
            updates = req.json_object()
        self._apply_site_config(updates)
        return text_response("")

    def initialized(self, req: Request) -> Response:
        return json_response(bool(self.state.site_config.get("initialized")))

    def build_info(self, req: Request) -> Response:
        return json_response(
            {
                "version": self.state.version,
                "buildNumber": "standin",
                "commit": "standin",
                "standin": STANDIN_NOTICE,
            }
        )

    def site_config_values(self, req: Request, keys: str) -> Response:
        self.require_admin(req)
        config = self.state.site_config
        wanted = [k.strip() for k in keys.split(",") if k.strip()]
        return json_response({k: config[k] for k in wanted if k in config})

    def site_config_key_get(self, req: Request, key: str) -> Response:
        self.require_admin(req)
        if key not in self.state.site_config:
            raise HttpError(404, f"No preference {key}")
        return json_response(self.state.site_config[key])

    def site_config_key_post(self, req: Request, key: str) -> Response:
        self.require_admin(req)
        # xnat-facts.md §7: body is text/plain or JSON
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
        # xnat-facts.md §8; the stand-in only models local (localdb) users: both are required.
        if not username or not password:
            raise HttpError(400, "username and password are required for a local user")
        if username in self.state.users:
            raise HttpError(409, f"User {username} already exists")  # §6 step 5: 409 exists
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
        return json_response(self._user_json(self._self_or_admin(req, u)))

    def user_put(self, req: Request, u: str) -> Response:
        user = self._self_or_admin(req, u)
        body = req.json_object()
        is_admin = req.user is not None and req.user.is_admin
        if not is_admin and ({"enabled", "verified"} & body.keys()):
            raise HttpError(403, "Administrator access required")
        # xnat-facts.md §6 steps 4/7, §8: merge of password / flags / profile fields.
        if "password" in body:
            if not isinstance(body["password"], str) or not body["password"]:
                raise HttpError(400, "password must be a non-empty string")
            user.password = body["password"]
        if "enabled" in body:
            user.enabled = _bool(body["enabled"], "enabled")
        if "verified" in body:
            user.verified = _bool(body["verified"], "verified")
        profile = (("email", "email"), ("firstName", "first_name"), ("lastName", "last_name"))
        for key, attr in profile:
            if key in body:
                setattr(user, attr, str(body[key]))
        return json_response(self._user_json(user))

    def user_enabled(self, req: Request, u: str, flag: str) -> Response:
        self.require_admin(req)
        self.user_or_404(u).enabled = _bool(flag, "enabled")  # xnat-facts.md §6 step 7
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
        if group in SITE_GROUPS:  # xnat-facts.md §8 ALL_DATA_ADMIN
            if member and group not in user.groups:
                user.groups.append(group)
            elif not member and group in user.groups:
                user.groups.remove(group)
            return
        # Project groups are `{project}_{owner|member|collaborator}` (xnat-facts.md §9).
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
    def notifications_get(self, req: Request) -> Response:
        self.require_admin(req)
        return json_response({"smtpServer": json.dumps(self.state.smtp)})

    def notifications_post(self, req: Request) -> Response:
        self.require_admin(req)
        body = req.json_object()
        server = body.get("smtpServer")
        if server is not None:
            # xnat-facts.md §15: `smtpServer` is itself a JSON *string*.
            if not isinstance(server, str):
                raise HttpError(400, "smtpServer must be a JSON string")
            try:
                parsed = json.loads(server)
            except ValueError as exc:
                raise HttpError(400, "smtpServer is not valid JSON") from exc
            if not isinstance(parsed, dict):
                raise HttpError(400, "smtpServer must encode a JSON object")
            self.state.smtp = parsed
        # xnat-facts.md §15 quirk: the JSON call APPLIES and still answers 500.
        raise HttpError(500, "Internal Server Error")

    def smtp_get(self, req: Request) -> Response:
        self.require_admin(req)
        return json_response(self.state.smtp)  # §15: password included as stored, like XNAT

    def smtp_form_post(self, req: Request) -> Response:
        self.require_admin(req)
        # xnat-facts.md §15: the form-encoded POST mis-binds and returns 500 (nothing applied).
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
        # xnat-facts.md §9: create takes an XML `xnat:projectData` body; JSON is rejected.
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
        if req.user is not None:
            project.members[req.user.username] = "owner"  # the creator becomes an Owner
        self.state.projects[project.id] = project
        if _version_at_least(self.state, 1, 10) and not self.state.site_config.get("siteUrl"):
            # xnat-facts.md §6 / §7: XNAT >= 1.10 with empty siteUrl creates, then answers 500.
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
        # xnat-facts.md §9: create-or-update with PUT /data/projects/{id}.
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

    def _readable_project(self, req: Request, pid: str) -> Project:
        project = self.project_or_404(pid)
        if not self.can_read(req.user, project):
            raise HttpError(403, f"No access to project {pid}")
        return project

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
        # xnat-facts.md §9 quirk: ANY integer is accepted (only 0, 4, 5 mean something).
        if not re.fullmatch(r"-?\d+", code):
            raise HttpError(400, "prearchive code must be an integer")
        project.prearchive_code = int(code)
        return text_response("")

    def project_users(self, req: Request, pid: str) -> Response:
        project = self.project_or_404(pid)
        user = req.user
        member = user is not None and user.username in project.members
        if not (member or (user is not None and (user.is_admin or user.groups))):
            raise HttpError(403, f"No access to project {pid}")
        display = {v: k for k, v in LEVEL_BY_PATH.items()}
        rows = []
        for username, level in sorted(project.members.items()):
            u = self.state.users[username]
            rows.append(
                {
                    "login": username,
                    "GROUP_ID": f"{pid}_{level}",  # xnat-facts.md §9 / §16.4: Xsync parses this
                    "displayname": display[level],
                    "firstname": u.first_name,
                    "lastname": u.last_name,
                    "email": u.email,
                    "xdat_user_id": str(u.xdat_user_id),
                }
            )
        return json_response({"ResultSet": {"Result": rows, "totalRecords": str(len(rows))}})

    def project_user_put(self, req: Request, pid: str, level: str, username: str) -> Response:
        project = self.owned_project(req, pid)
        if level not in LEVEL_BY_PATH:
            raise HttpError(400, "level must be Owners, Members or Collaborators")
        self.user_or_404(username)  # brief: 404 unknown user
        project.members[username] = LEVEL_BY_PATH[level]
        return text_response("")

    def project_user_delete(self, req: Request, pid: str, level: str, username: str) -> Response:
        project = self.owned_project(req, pid)
        if level not in LEVEL_BY_PATH:
            raise HttpError(400, "level must be Owners, Members or Collaborators")
        self.user_or_404(username)
        if project.members.get(username) == LEVEL_BY_PATH[level]:
            del project.members[username]
        return text_response("")

    # -- §10 DICOM SCP receivers -------------------------------------------------------------------
    def _receiver(self, rid: str) -> dict[str, Any]:
        receiver = self.state.receivers.get(int(rid)) if rid.isdigit() else None
        if receiver is None:
            raise HttpError(404, f"No DICOM SCP receiver {rid}")
        return receiver

    @staticmethod
    def _receiver_fields(body: dict[str, Any]) -> dict[str, Any]:
        # Only DicomSCPInstance fields are kept (xnat-facts.md §10): `whitelistText` is dropped.
        fields = {k: v for k, v in body.items() if k in RECEIVER_DEFAULTS}
        for key in ("enabled", "customProcessing", "directArchive", "anonymizationEnabled"):
            if key in fields:
                fields[key] = _bool(fields[key], key)
        if "port" in fields:
            if isinstance(fields["port"], str) and fields["port"].isdigit():
                fields["port"] = int(fields["port"])
            if not isinstance(fields["port"], int) or isinstance(fields["port"], bool):
                raise HttpError(400, "port must be an integer")
        return fields

    def scp_list(self, req: Request) -> Response:
        return json_response([self.state.receivers[k] for k in sorted(self.state.receivers)])

    def scp_create(self, req: Request) -> Response:
        self.require_admin(req)
        fields = self._receiver_fields(req.json_object())
        receiver = {**RECEIVER_DEFAULTS, **fields}
        if not receiver["aeTitle"] or not receiver["port"]:
            raise HttpError(400, "aeTitle and port are required")
        for other in self.state.receivers.values():
            # xnat-facts.md §10: 409 only when an ENABLED receiver has the same AE AND port;
            # another AE on the same port is silently accepted (duplicate-port trap).
            same = other["aeTitle"] == receiver["aeTitle"] and other["port"] == receiver["port"]
            if same and other["enabled"]:
                raise HttpError(409, f"A receiver {receiver['aeTitle']}:{receiver['port']} exists")
        rid = self.state.next_id("receiver")
        receiver.update(id=rid, created=now_ms(), timestamp=now_ms())
        self.state.receivers[rid] = receiver
        return json_response(receiver)

    def scp_by_title(self, req: Request, ae: str, port: str) -> Response:
        for receiver in self.state.receivers.values():
            if receiver["aeTitle"] == ae and str(receiver["port"]) == port:
                return json_response(receiver)
        raise HttpError(404, f"No receiver {ae}:{port}")

    def scp_get(self, req: Request, rid: str) -> Response:
        return json_response(self._receiver(rid))

    def scp_put(self, req: Request, rid: str) -> Response:
        self.require_admin(req)
        receiver = self._receiver(rid)
        # xnat-facts.md §10: PUT MERGES the body into the stored object.
        receiver.update(self._receiver_fields(req.json_object()))
        receiver["timestamp"] = now_ms()
        return json_response(receiver)

    def scp_delete(self, req: Request, rid: str) -> Response:
        self.require_admin(req)
        self.state.receivers.pop(int(self._receiver(rid)["id"]))
        return text_response("")

    def scp_enabled_get(self, req: Request, rid: str) -> Response:
        return json_response(bool(self._receiver(rid)["enabled"]))

    def scp_enabled_put(self, req: Request, rid: str, flag: str) -> Response:
        self.require_admin(req)
        receiver = self._receiver(rid)
        receiver["enabled"] = _bool(flag, "enabled")
        return json_response(receiver)

    # -- §11 anonymization -------------------------------------------------------------------------
    @staticmethod
    def _enable_param(req: Request) -> bool:
        return _bool(req.query.get("enable", "true"), "enable")  # §11: query param, default true

    def anon_default(self, req: Request) -> Response:
        return text_response(DEFAULT_ANON_SCRIPT)

    def anon_site_get(self, req: Request) -> Response:
        self.require_admin(req)
        return text_response(str(self.state.site_config.get("sitewideAnonymizationScript") or ""))

    def anon_site_put(self, req: Request) -> Response:
        self.require_admin(req)
        # xnat-facts.md §11: mirrored in siteConfig `sitewideAnonymizationScript`.
        self.state.site_config["sitewideAnonymizationScript"] = req.text()
        return text_response("")

    def anon_site_enabled_get(self, req: Request) -> Response:
        self.require_admin(req)
        return json_response(bool(self.state.site_config.get("enableSitewideAnonymizationScript")))

    def anon_site_enabled_put(self, req: Request) -> Response:
        self.require_admin(req)
        self.state.site_config["enableSitewideAnonymizationScript"] = self._enable_param(req)
        return text_response("")

    def anon_project_get(self, req: Request, pid: str) -> Response:
        project = self.owned_project(req, pid)
        if project.anon_script is None:
            return Response(204)  # xnat-facts.md §11: GET 204 when no script
        return text_response(project.anon_script)

    def anon_project_put(self, req: Request, pid: str) -> Response:
        self.owned_project(req, pid).anon_script = req.text()
        return text_response("")

    def anon_project_enabled_get(self, req: Request, pid: str) -> Response:
        return json_response(self.owned_project(req, pid).anon_enabled)

    def anon_project_enabled_put(self, req: Request, pid: str) -> Response:
        self.owned_project(req, pid).anon_enabled = self._enable_param(req)
        return text_response("")

    # -- §12 event service -------------------------------------------------------------------------
    def _subscription(self, sid: str) -> dict[str, Any]:
        sub = self.state.subscriptions.get(int(sid)) if sid.isdigit() else None
        if sub is None:
            raise HttpError(404, f"No subscription {sid}")
        return sub

    def events_prefs_get(self, req: Request) -> Response:
        self.require_admin(req)
        return json_response(self.state.events_prefs)

    def events_prefs_put(self, req: Request) -> Response:
        self.require_admin(req)
        body = req.json_object()
        if "enabled" in body:
            body["enabled"] = _bool(body["enabled"], "enabled")
        self.state.events_prefs.update(body)
        return json_response(self.state.events_prefs)

    def subscriptions_list(self, req: Request) -> Response:
        self.require_admin(req)
        subs = self.state.subscriptions
        return json_response([subs[k] for k in sorted(subs)])

    def subscription_create(self, req: Request, pid: str | None = None) -> Response:
        self.require_admin(req)
        if not self.state.events_prefs.get("enabled"):
            raise HttpError(405, "Event Service disabled.")  # xnat-facts.md §12
        body = req.json_object()
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise HttpError(400, "Subscription name is required")
        if pid is not None:  # §12 per-project create
            self.project_or_404(pid)
            event_filter = dict(body.get("event-filter") or {})
            event_filter["project-ids"] = [pid]
            body["event-filter"] = event_filter
        # xnat-facts.md §12: duplicates are NOT rejected; the server adds these fields.
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
        return text_response(f"{name}:{sid}", 201)  # §12 quirk: plain-text "{name}:{id}"

    def subscription_get(self, req: Request, sid: str) -> Response:
        self.require_admin(req)
        return json_response(self._subscription(sid))

    def subscription_put(self, req: Request, sid: str) -> Response:
        self.require_admin(req)
        sub = self._subscription(sid)
        body = req.json_object()
        for key in ("id", "subscription-owner", "created"):  # server-owned fields
            body.pop(key, None)
        sub.update(body)
        return json_response(sub)

    def subscription_delete(self, req: Request, sid: str) -> Response:
        self.require_admin(req)
        self.state.subscriptions.pop(int(self._subscription(sid)["id"]))
        return Response(204)

    def subscription_activate(self, req: Request, sid: str, action: str) -> Response:
        self.require_admin(req)
        if action not in ("activate", "deactivate"):
            raise HttpError(404, "Not found")
        self._subscription(sid)["active"] = action == "activate"
        return text_response("")

    # -- §13 container service ---------------------------------------------------------------------
    def require_container_manager(self, req: Request) -> None:
        user = req.user
        roles = set(user.roles) if user else set()
        allowed = {"ContainerManager"}
        if not self.state.commands_require_container_manager:
            allowed.add("Administrator")
        if not roles & allowed:
            # xnat-facts.md §8 / §13: ContainerManager role required (CS >= 3.7.0), else 403.
            raise HttpError(403, "The ContainerManager role is required")

    def docker_get(self, req: Request) -> Response:
        self.require_admin(req)
        return json_response(self.state.docker_server)

    def docker_post(self, req: Request) -> Response:
        self.require_admin(req)
        body = req.json_object()
        if not body.get("host"):
            raise HttpError(400, "host is required")
        self.state.docker_server = {**body, "id": 1}
        return json_response(self.state.docker_server)

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

    def commands_list(self, req: Request) -> Response:
        self.require_container_manager(req)
        commands = [self.state.commands[k] for k in sorted(self.state.commands)]
        if "name" in req.query:
            commands = [c for c in commands if c.get("name") == req.query["name"]]
        return json_response(commands)

    def command_create(self, req: Request) -> Response:
        self.require_container_manager(req)
        body = self._validated_command(req)
        cid = self.state.next_id("command")
        body["id"] = cid
        self.state.commands[cid] = body
        return text_response(str(cid), 201)  # xnat-facts.md §13: body = bare numeric id

    def command_get(self, req: Request, cid: str) -> Response:
        self.require_container_manager(req)
        return json_response(self._command(cid))

    def command_put(self, req: Request, cid: str) -> Response:
        self.require_container_manager(req)
        old = self._command(cid)
        body = self._validated_command(req)  # xnat-facts.md §13: update is a full replace
        body["id"] = old["id"]
        self.state.commands[old["id"]] = body
        return json_response(body)

    def command_delete(self, req: Request, cid: str) -> Response:
        self.require_container_manager(req)
        # xnat-facts.md §13 quirk: deleting a missing command reports success.
        if cid.isdigit():
            self.state.commands.pop(int(cid), None)
        return Response(204)

    def _wrapper_key(self, cid: str, wrapper: str) -> tuple[int, str]:
        command = self._command(cid)
        for w in command["xnat"]:
            if wrapper in (w["name"], str(w["id"])):
                return command["id"], w["name"]
        raise HttpError(404, f"No wrapper {wrapper} in command {cid}")

    def _wrapper_set(self, req: Request, pid: str | None) -> set[tuple[int, str]]:
        if pid is None:
            return self.state.wrappers_enabled
        return self.owned_project(req, pid).wrappers_enabled

    def wrapper_enabled_get(
        self, req: Request, cid: str, wrapper: str, pid: str | None = None
    ) -> Response:
        self.require_container_manager(req)
        key = self._wrapper_key(cid, wrapper)
        return json_response(key in self._wrapper_set(req, pid))

    def wrapper_enabled_put(
        self, req: Request, cid: str, wrapper: str, state: str, pid: str | None = None
    ) -> Response:
        self.require_container_manager(req)
        if state not in ("enabled", "disabled"):
            raise HttpError(404, "Not found")
        key = self._wrapper_key(cid, wrapper)
        target = self._wrapper_set(req, pid)
        if state == "enabled":
            target.add(key)
        else:
            target.discard(key)
        return text_response("")

    # -- §14 plugins -------------------------------------------------------------------------------
    def plugins_list(self, req: Request) -> Response:
        return json_response(self.state.plugins)

    def plugin_get(self, req: Request, plugin: str) -> Response:
        if plugin not in self.state.plugins:
            raise HttpError(404, f"No plugin {plugin}")
        return json_response(self.state.plugins[plugin])

    # -- §16 Xsync ---------------------------------------------------------------------------------
    def _require_xsync_content_type(self, req: Request) -> None:
        # xnat-facts.md §16.4 [VER]: Java 8 builds consume text/plain, newer ones application/json.
        wanted = self.state.xsync_content_type.split(";")[0].strip().lower()
        if req.content_type != wanted:
            raise HttpError(415, f"Content type '{req.content_type}' not supported")

    def _configured(self, pid: str) -> dict[str, Any]:
        config = self.state.xsync_configs.get(pid)
        if config is None:
            raise HttpError(404, f"Project {pid} is not configured for Xsync")
        return config

    def xsync_prefs_get(self, req: Request) -> Response:
        self.require_admin(req)
        return json_response(self.state.xsync_site_prefs)

    def xsync_prefs_post(self, req: Request) -> Response:
        self.require_admin(req)
        body = req.json_object()
        for key in ("tokenRefreshInterval", "syncRetryInterval"):
            if key not in body:
                continue
            # xnat-facts.md §16.2: `<N> hours|minutes` and >= 5 minutes, else the setter throws.
            value = str(body[key])
            if not re.fullmatch(r"\d+ (hours|minutes)", value) or interval_seconds(value) < 300:
                raise HttpError(400, f"{key} must be '<N> hours|minutes' and at least 5 minutes")
        self.state.xsync_site_prefs.update(body)
        return json_response(self.state.xsync_site_prefs)

    def xsync_setup_get(self, req: Request, pid: str) -> Response:
        self.owned_project(req, pid)
        return json_response(self._configured(pid))  # §16.7: older GET 404 when no config

    def xsync_setup_post(self, req: Request, pid: str) -> Response:
        self._require_xsync_content_type(req)
        self.owned_project(req, pid)  # §16.3: needs Owner/admin on the relay project
        body = req.json_object()
        if body.get("source_project_id") != pid:
            # xnat-facts.md §16.3 [VER]: source_project_id must equal the path project.
            raise HttpError(400, "source_project_id must match the project in the path")
        if not body.get("remote_url") or not body.get("remote_project_id"):
            raise HttpError(400, "remote_url and remote_project_id are required")
        self.state.xsync_configs[pid] = body
        return text_response("")

    def _remote_get(self, url: str, alias: str, secret: str) -> requests.Response:
        try:
            return requests.get(
                url,
                auth=(alias, secret),
                timeout=REMOTE_TIMEOUT,
                verify=self.state.xsync_remote_verify,
            )
        except requests.RequestException as exc:
            raise HttpError(400, "Could not connect to the remote host") from exc

    def xsync_save(self, req: Request, pid: str) -> Response:
        required = ("host", "localProject", "remoteProject", "alias", "secret", "username")
        with self.state.lock:
            self._require_xsync_content_type(req)
            self.owned_project(req, pid)
            body = req.json_object()
            if any(not body.get(k) for k in required):
                raise HttpError(400, "Incomplete credentials: " + ", ".join(required))  # §16.4
        host = str(body["host"]).rstrip("/")
        remote_project = str(body["remoteProject"])
        # xnat-facts.md §16.4 step 2: read the remote project's users with the token.
        resp = self._remote_get(
            f"{host}/data/archive/projects/{remote_project}/users?format=json",
            str(body["alias"]),
            str(body["secret"]),
        )
        if resp.status_code != 200:
            raise HttpError(403, f"No access to remote project {remote_project}")
        try:
            rows = resp.json()["ResultSet"]["Result"]
        except (ValueError, KeyError, TypeError) as exc:
            raise HttpError(400, "Unexpected answer from the remote host") from exc
        groups = [str(r.get("GROUP_ID", "")) for r in rows if r.get("login") == body["username"]]
        if any(g.endswith("_owner") for g in groups):
            status, message = 200, "Credentials saved."
        elif any(g.endswith("_member") for g in groups):
            status, message = 202, "Credentials saved. Warning: the remote user is only a Member"
        elif groups:  # collaborator
            raise HttpError(403, f"Remote user is a Collaborator on {remote_project}")
        else:
            status, message = 202, "Credentials saved. Remote user may have All Data Access"
        with self.state.lock:
            # xnat-facts.md §16.4: the stored credential is keyed by (local project, host).
            self.state.xsync_credentials[(pid, str(body["host"]))] = {
                "alias": body["alias"],
                "secret": body["secret"],
                "username": body["username"],
                "remoteProject": remote_project,
                "syncNewOnly": body.get("syncNewOnly"),
                "estimatedExpirationTime": body.get("estimatedExpirationTime"),
            }
        return text_response(message, status)

    def xsync_check(self, req: Request, pid: str) -> Response:
        with self.state.lock:
            self._require_xsync_content_type(req)
            self.owned_project(req, pid)
            body = req.json_object()
            cred = self.state.xsync_credentials.get((pid, str(body.get("host") or "")))
            if cred is None:
                raise HttpError(403, "Check project configuration")  # §16.4 step 3 (newer)
            cred = dict(cred)
        host = str(body["host"]).rstrip("/")
        try:
            resp = self._remote_get(f"{host}/data/JSESSIONID", cred["alias"], cred["secret"])
        except HttpError as exc:
            raise HttpError(400, "Could not connect") from exc
        if resp.status_code != 200:
            raise HttpError(400, "Could not connect")  # §16.4 step 3
        return text_response(resp.text)

    def xsync_remote_rest(self, req: Request) -> Response:
        with self.state.lock:
            self.require_admin(req)
        body = req.json_object()
        if any(not body.get(k) for k in ("url", "method", "username", "password")):
            raise HttpError(400, "url, method, username and password are required")
        # xnat-facts.md §16.4 step 1: performs the call on the remote, answers its body as text.
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
        self.owned_project(req, pid)
        self._configured(pid)
        return json_response(self.state.xsync_status.get(pid, {"status": None, "lastSync": None}))

    def xsync_unblock(self, req: Request, pid: str) -> Response:
        self.owned_project(req, pid)
        self._configured(pid)  # xnat-facts.md §16.5: 404 when the project is not configured
        self.state.xsync_blocked.pop(pid, None)
        return text_response(f"{pid} unblocked")

    def xsync_history(self, req: Request, pid: str | None = None) -> Response:
        self.require_admin(req)
        history = self.state.xsync_history
        if pid is not None:
            history = [h for h in history if h.get("project") == pid]
        return json_response(history)

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
                # xnat-facts.md §6: bad credentials (e.g. admin:admin after rotation) -> 401
                return text_response("Bad username or password", 401)
        elif req.session_id:
            with state.lock:
                req.user = self.session_user(req.session_id)
            if req.user is None:
                req.session_id = None
        route, params, path_known = self.match(req.method, req.path)
        if req.user is None and (route is None or not route.anonymous):
            return text_response("Authentication required", 401)
        if not state.site_config.get("initialized") and (route is None or not route.pre_init):
            return self.setup_page()  # xnat-facts.md §6: 200 + text/html before initialisation
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
        if resp.status != 204:
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
    """An XNAT REST stand-in for xnat-fleet tests — NOT XNAT (xnat-facts.md §6-§16).

    ``with XnatStandin() as xnat: requests.get(xnat.url + "/xapi/siteConfig/initialized")``
    """

    def __init__(
        self,
        *,
        version: str = "1.9.3.6",
        xsync: bool = False,
        xsync_content_type: str = "text/plain",
        initial_admin_password: str = "admin",
        name: str = "xnat",
    ) -> None:
        self.state: State = new_state(
            version=version,
            xsync=xsync,
            xsync_content_type=xsync_content_type,
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
