"""XNAT's SMTP server (docs/xnat-api.md §15).

Written with ``POST /xapi/notifications`` whose ``smtpServer`` value is itself a JSON *string* of
``{hostname, port, protocol, username, password, mailProperties}``; XNAT may answer 500 and still
apply it, so success is decided by reading back ``GET /xapi/notifications/smtp``, never by the
status. The password is never shown: plans display ``SECRET``; it is compared only when XNAT's
read-back includes it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from xnat_fleet.xnat.changes import SECRET, Change, ReconcileError
from xnat_fleet.xnat.client import XnatError, XnatHTTPError
from xnat_fleet.xnat.context import HostContext

AREA = "smtp"
AUTH = "mail.smtp.auth"
STARTTLS = "mail.smtp.starttls.enable"
PROTOCOLS = ("smtp", "smtps")
# Compared keys, in display order. `password` only when the read-back carries one.
KEYS = ("hostname", "port", "protocol", "username", AUTH, STARTTLS, "password")


def _flag(value: Any) -> str:
    if isinstance(value, str):
        return "true" if value.strip().lower() == "true" else "false"
    return "true" if value else "false"


def desired_server(ctx: HostContext) -> dict[str, Any]:
    """The ``smtpServer`` object to send (docs/xnat-api.md §15), validated before any request."""
    smtp = ctx.desired.smtp

    def fail(message: str) -> None:
        raise ReconcileError(ctx.host, AREA, message)

    hostname = smtp.get("hostname")
    if not isinstance(hostname, str) or not hostname.strip():
        fail("smtp.hostname must be a non-empty host name")
    port = smtp.get("port")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        fail(f"smtp.port {port!r} must be a port number 1-65535")
    protocol = smtp.get("protocol", "smtp")
    if protocol not in PROTOCOLS:
        fail(f"smtp.protocol {protocol!r} must be one of {', '.join(PROTOCOLS)}")
    username = smtp.get("username") or ""
    password = smtp.get("password") or ""
    if not isinstance(username, str) or not isinstance(password, str):
        fail("smtp.username and smtp.password must be strings")
    if bool(username) != bool(password):
        fail("smtp.username and smtp.password go together: set both or neither")
    props = dict(smtp.get("mailProperties") or {})
    auth = _flag(props.get(AUTH, smtp.get("auth", bool(username))))
    starttls = _flag(props.get(STARTTLS, smtp.get("starttls", False)))
    if auth == "true" and not username:
        fail(f"{AUTH} is true but smtp.username is empty")
    props.update({AUTH: auth, STARTTLS: starttls})
    return {
        "hostname": hostname,
        "port": port,
        "protocol": protocol,
        "username": username,
        "password": password,
        "mailProperties": props,
    }


def normalise(data: Any) -> dict[str, Any]:
    """XNAT's read-back in the shape of :func:`desired_server`'s compared keys.

    Accepts ``hostname`` or ``host`` (Java mail sender name), a nested ``mailProperties`` map or
    the ``mail.*`` properties at top level, and numbers/flags as strings."""
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    # docs/xnat-api.md §15: XNAT leaves blank hostname/protocol/username/password out of the
    # map (SmtpServer.asProperties), so a missing key reads as "" (never as "unknown").
    out["hostname"] = str(data.get("hostname", data.get("host")) or "")
    if data.get("port") is not None:
        port = data["port"]
        out["port"] = int(port) if isinstance(port, str) and port.strip().isdigit() else port
    for key in ("protocol", "username"):
        out[key] = str(data.get(key) or "")
    password = data.get("password")
    # A masked echo ("********") says nothing about the stored value: not compared.
    if not (isinstance(password, str) and re.fullmatch(r"\*{3,}", password)):
        out["password"] = "" if password is None else str(password)
    props: dict[str, Any] = {k: v for k, v in data.items() if k.startswith("mail.")}
    if isinstance(data.get("mailProperties"), dict):
        props.update(data["mailProperties"])
    for key in (AUTH, STARTTLS):
        out[key] = _flag(props.get(key, False))
    return out


def _flat(server: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in server.items() if k != "mailProperties"}
    flat.update({k: server["mailProperties"][k] for k in (AUTH, STARTTLS)})
    return flat


def differences(want: dict[str, Any], current: dict[str, Any]) -> list[str]:
    flat = _flat(want)
    return [
        key
        for key in KEYS
        if not (key == "password" and key not in current) and current.get(key) != flat[key]
    ]


def _shown(values: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: (SECRET if k == "password" else values.get(k)) for k in keys}


def read_current(ctx: HostContext) -> dict[str, Any]:
    """``GET /xapi/notifications/smtp`` (docs/xnat-api.md §15); empty on a fresh site."""
    return ctx.read(lambda: normalise(ctx.client.get_json("/xapi/notifications/smtp")), fresh={})


def plan(ctx: HostContext) -> list[Change]:
    desired_server(ctx)  # validated before any request
    return plan_changes(ctx, read_current(ctx))


def plan_changes(ctx: HostContext, current: dict[str, Any]) -> list[Change]:
    """Pure: the change from the inventory's SMTP server and ``current`` (no request is sent)."""
    want = desired_server(ctx)
    if want["password"]:
        ctx.client.add_secret(want["password"])
    keys = differences(want, current)
    if not keys:
        return []
    client = ctx.client
    host = ctx.host

    def apply() -> None:
        # docs/xnat-api.md §15: `smtpServer` is a JSON string inside the JSON body; some builds
        # store everything and then answer 500, so accept 500 and judge by the read-back.
        response = client.request(
            "POST",
            "/xapi/notifications",
            json={"smtpServer": json.dumps(want)},
            ok=(200, 201, 202, 204, 500),
        )
        after = normalise(client.get_json("/xapi/notifications/smtp"))
        left = differences(want, after)
        if left:
            message = (
                f"{host}: smtp: the read-back of GET /xapi/notifications/smtp still differs in "
                f"{', '.join(left)} after POST /xapi/notifications"
            )
            if response.status_code >= 400:
                raise XnatHTTPError(
                    "POST", "/xapi/notifications", response.status_code, message, client.url
                )
            raise XnatError(message)

    return [
        Change(
            AREA,
            "update",
            "SMTP server",
            before=_shown(current, keys),
            after=_shown(_flat(want), keys),
            apply=apply,
        )
    ]
