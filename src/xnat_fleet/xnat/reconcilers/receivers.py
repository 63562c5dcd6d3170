"""DICOM C-STORE receivers (XNAT's DICOM SCP instances).

docs/xnat-api.md §10. A receiver's identity is its AE title + port. Endpoints:
``GET|POST /xapi/dicomscp``, ``PUT|DELETE /xapi/dicomscp/{id}`` (on most XNAT builds PUT *replaces*
the receiver with the body, fields left out becoming null or defaults; one later build merges:
so the whole receiver is always sent, correct on both), ``PUT /xapi/dicomscp/{id}/enabled/{bool}``,
``GET /xapi/dicomscp/title/{ae}/{port}``.

Guards (§10 "Duplicate-port trap", §18): XNAT silently accepts two receivers on one port, so the
desired state is refused when two receivers share a port, or when a receiver's port is taken on the
site by a receiver the inventory does not list (unless ``--prune`` deletes that one first).
Receivers the inventory does not list are deleted only with ``ctx.prune``, else shown as notes.
A receiver with ``project`` routes everything it receives to that project (§10 "One AE per
project").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xnat_fleet.model.fleet import Receiver
from xnat_fleet.xnat.changes import Change, ReconcileError
from xnat_fleet.xnat.client import XnatClient, XnatError, seg
from xnat_fleet.xnat.context import HostContext

AREA = "receivers"
# docs/xnat-api.md §10 "One AE per project": match anything, replace with the project id.
PROJECT_ROUTING = "(0008,0018):(.*):1 t:.+ r:{project}"
# docs/xnat-api.md §10 receiver JSON defaults (DicomSCPInstance): a field XNAT leaves out has these.
DEFAULTS: dict[str, Any] = {
    "identifier": "dicomObjectIdentifier",
    "enabled": True,
    "customProcessing": False,
    "directArchive": False,
    "anonymizationEnabled": True,
    "whitelistEnabled": False,
    "whitelist": [],
    "routingExpressionsEnabled": False,
    "projectRoutingExpression": "",
}
# docs/xnat-host.md §1 ports / §10: a fresh XNAT has one receiver, AE `XNAT` on port 8104
# (DicomSCPInstance.createDefault()). Its id is unknown until it can be read.
FACTORY_DEFAULT: tuple[str, int] = ("XNAT", 8104)
FRESH_RECEIVERS: list[dict[str, Any]] = [{**DEFAULTS, "id": None, "aeTitle": "XNAT", "port": 8104}]

Identity = tuple[str, int]


def payload(r: Receiver) -> dict[str, Any]:
    """The receiver JSON XNAT should hold (docs/xnat-api.md §10 table), native JSON types."""
    body: dict[str, Any] = {
        "aeTitle": r.ae_title,
        "port": r.port,
        "identifier": r.identifier,
        "enabled": r.enabled,
        "customProcessing": r.custom_processing,
        "directArchive": r.direct_archive,
        "anonymizationEnabled": r.anonymization,
        "whitelistEnabled": bool(r.whitelist),
        "whitelist": list(r.whitelist),
        "routingExpressionsEnabled": r.project is not None,
    }
    if r.project is not None:
        body["projectRoutingExpression"] = PROJECT_ROUTING.format(project=r.project)
    return body


def _name(ae: str, port: int) -> str:
    return f"receiver {ae}:{port}"


def _identity(receiver: dict[str, Any]) -> Identity:
    return str(receiver.get("aeTitle", "")), int(receiver.get("port", 0))


def _current_value(receiver: dict[str, Any], key: str) -> Any:
    value = receiver.get(key)
    if value is None:
        value = DEFAULTS.get(key)
    if key == "whitelist":
        return list(value or [])
    if key == "port":
        return int(value or 0)
    if key == "projectRoutingExpression":
        return str(value or "")
    return value


# -- validation ------------------------------------------------------------------------------------
def _validate(ctx: HostContext) -> None:
    """Refuse two desired receivers on one port: XNAT would accept both (§10)."""
    by_port: dict[int, Receiver] = {}
    for r in ctx.desired.receivers:
        other = by_port.get(r.port)
        if other is not None:
            raise ReconcileError(
                ctx.host,
                AREA,
                f"receivers {other.ae_title}:{other.port} and {r.ae_title}:{r.port} share port "
                f"{r.port}; XNAT would accept both and only one can listen (docs/xnat-api.md §10)",
            )
        by_port[r.port] = r


# -- reads -----------------------------------------------------------------------------------------
def _list(client: XnatClient) -> list[dict[str, Any]]:
    # docs/xnat-api.md §10: GET /xapi/dicomscp lists every receiver.
    data = client.get_json("/xapi/dicomscp")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise XnatError("GET /xapi/dicomscp: expected a JSON list of receivers")
    return sorted(data, key=lambda r: (r.get("id") is None, r.get("id") or 0))


def _resolve(client: XnatClient, receiver: dict[str, Any]) -> int:
    """The receiver's id; looked up at apply time when it was planned on a fresh site."""
    if receiver.get("id") is not None:
        return int(receiver["id"])
    ae, port = _identity(receiver)
    # docs/xnat-api.md §10: GET /xapi/dicomscp/title/{ae}/{port}
    found = client.get_json(f"/xapi/dicomscp/title/{seg(ae)}/{port}")
    if not isinstance(found, dict) or found.get("id") is None:
        raise XnatError(f"GET /xapi/dicomscp/title/{ae}/{port}: no receiver id in the answer")
    return int(found["id"])


# -- writes ----------------------------------------------------------------------------------------
def _create(client: XnatClient, body: dict[str, Any]) -> Callable[[], None]:
    def apply() -> None:
        # docs/xnat-api.md §10: POST /xapi/dicomscp creates (400 when AE+port is taken).
        client.request("POST", "/xapi/dicomscp", json=body, ok=(200, 201))

    return apply


def whole_receiver(
    current: dict[str, Any], fields: dict[str, Any], enabled: bool | None
) -> dict[str, Any]:
    """The complete receiver to PUT: XNAT's current one with the changed ``fields`` laid over.

    docs/xnat-api.md §10: most builds bind the PUT body into a fresh instance (a field left out
    comes back null, 0 or a default: aeTitle/identifier null, port 0, enabled true), one later
    build merges; the whole object is right on both. ``enabled`` stays as it is unless the
    receiver is being switched off (then off already, so the PUT cannot switch it back on)."""
    body = {key: _current_value(current, key) for key in ("aeTitle", "port", *DEFAULTS)}
    body.update({k: v for k, v in current.items() if v is not None})
    body.update(fields)
    if enabled is False:
        body["enabled"] = False
    else:
        body["enabled"] = bool(_current_value(current, "enabled"))
    return body


def _update(
    client: XnatClient, current: dict[str, Any], diff: dict[str, Any]
) -> Callable[[], None]:
    fields = {k: v for k, v in diff.items() if k != "enabled"}
    enabled = diff.get("enabled")

    def apply() -> None:
        rid = _resolve(client, current)

        def flag() -> None:
            if enabled is not None:
                # docs/xnat-api.md §10: PUT /xapi/dicomscp/{id}/enabled/{true|false}
                state = "true" if enabled else "false"
                client.request("PUT", f"/xapi/dicomscp/{rid}/enabled/{state}")

        if enabled is False:
            flag()  # stop listening before anything else changes
        if fields:
            # docs/xnat-api.md §10: PUT /xapi/dicomscp/{id} with the whole receiver.
            body = {**whole_receiver(current, fields, enabled), "id": rid}
            client.request("PUT", f"/xapi/dicomscp/{rid}", json=body)
        if enabled is True:
            flag()

    return apply


def _delete(client: XnatClient, current: dict[str, Any]) -> Callable[[], None]:
    def apply() -> None:
        rid = _resolve(client, current)
        # docs/xnat-api.md §10: DELETE /xapi/dicomscp/{id}
        client.request("DELETE", f"/xapi/dicomscp/{rid}")

    return apply


def _shown(receiver: dict[str, Any]) -> dict[str, Any]:
    keys = ("aeTitle", "port", "enabled", "routingExpressionsEnabled", "projectRoutingExpression")
    return {k: _current_value(receiver, k) for k in keys}


# -- planning --------------------------------------------------------------------------------------
def read(ctx: HostContext) -> list[dict[str, Any]]:
    """Every receiver XNAT has (XNAT's factory default on a fresh site, without a request)."""
    _validate(ctx)
    return ctx.read(lambda: _list(ctx.client), fresh=[dict(r) for r in FRESH_RECEIVERS])


def plan(ctx: HostContext) -> list[Change]:
    """Receivers as the inventory lists them (docs/xnat-api.md §10)."""
    return plan_changes(ctx, read(ctx))


def plan_changes(ctx: HostContext, current: list[dict[str, Any]]) -> list[Change]:
    """Pure: the changes from the inventory's receivers and ``current`` (no request is sent)."""
    _validate(ctx)
    client = ctx.client

    wanted: dict[Identity, Receiver] = {(r.ae_title, r.port): r for r in ctx.desired.receivers}
    managed: dict[Identity, dict[str, Any]] = {}
    unmanaged: list[dict[str, Any]] = []
    for receiver in current:  # sorted by id: the oldest of duplicates is the managed one
        ident = _identity(receiver)
        if ident in wanted and ident not in managed:
            managed[ident] = receiver
        else:
            unmanaged.append(receiver)

    # XNAT's factory-default receiver (XNAT:8104, created at first start: docs/xnat-host.md §1, §10)
    # is not anybody's data: when the inventory puts its own receiver on that port, the default
    # is replaced, prune or not.
    wanted_ports = {r.port for r in ctx.desired.receivers}
    replaced = [
        other
        for other in unmanaged
        if _identity(other) == FACTORY_DEFAULT and FACTORY_DEFAULT[1] in wanted_ports
    ]

    # docs/xnat-api.md §10 duplicate-port trap: a port taken by a receiver we do not manage.
    if not ctx.prune:
        for r in ctx.desired.receivers:
            for other in unmanaged:
                if other in replaced:
                    continue
                if _identity(other)[1] == r.port:
                    ae, port = _identity(other)
                    raise ReconcileError(
                        ctx.host,
                        AREA,
                        f"receiver {r.ae_title}:{r.port}: port {r.port} is already used by "
                        f"receiver {ae}:{port}, which the inventory does not list; XNAT would "
                        "accept both (docs/xnat-api.md §10). Remove it (or run with --prune).",
                    )

    changes: list[Change] = []
    # Deletions (or notes) first, so a port they free can be taken by a create below.
    for other in unmanaged:
        ae, port = _identity(other)
        if ctx.prune or other in replaced:
            changes.append(
                Change(
                    AREA,
                    "delete",
                    _name(ae, port),
                    _shown(other),
                    None,
                    detail=(
                        f"XNAT's factory-default receiver; the inventory uses port {port}"
                        if other in replaced
                        else ""
                    ),
                    apply=_delete(client, other),
                )
            )
        else:
            changes.append(
                Change(
                    AREA,
                    "note",
                    _name(ae, port),
                    _shown(other),
                    None,
                    detail=f"{_name(ae, port)} not in the inventory; kept (use --prune)",
                )
            )
    for ident, r in wanted.items():
        body = payload(r)
        have = managed.get(ident)
        if have is None:
            changes.append(
                Change(AREA, "create", _name(*ident), None, body, apply=_create(client, body))
            )
            continue
        diff = {k: v for k, v in body.items() if _current_value(have, k) != v}
        if diff:
            changes.append(
                Change(
                    AREA,
                    "update",
                    _name(*ident),
                    {k: _current_value(have, k) for k in diff},
                    diff,
                    apply=_update(client, have, diff),
                )
            )
    return changes
