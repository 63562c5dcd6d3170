"""DICOM receivers reconciler against the XNAT REST stand-in over real HTTP
(docs/xnat-api.md §10)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.xnat_helpers import (
    AUTH,
    apply_all,
    context,
    desired,
    drift,
    initialise,
    refused,
    targets,
    writes,
)
from tests.xnat_standin import XnatStandin
from xnat_fleet.model.fleet import Receiver
from xnat_fleet.xnat.changes import ReconcileError
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.reconcilers import receivers

ROUTED = Receiver(ae_title="STUDY1", port=8105, project="STUDY1", whitelist=["10.1.2.3"])
PLAIN = Receiver(ae_title="RELAY", port=8106, anonymization=False, direct_archive=True)


def by_identity(sa: XnatStandin) -> dict[str, dict[str, Any]]:
    return {f"{r['aeTitle']}:{r['port']}": r for r in sa.state.receivers.values()}


def record_bodies(ctx: HostContext, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """Capture (method, path, json) of every client request."""
    sent: list[tuple[str, str, Any]] = []
    original = ctx.client.request

    def request(method: str, path: str, **kwargs: Any) -> requests.Response:
        sent.append((method, path, kwargs.get("json")))
        return original(method, path, **kwargs)

    monkeypatch.setattr(ctx.client, "request", request)
    return sent


def test_plan_on_empty_site_lists_every_change(sa: XnatStandin) -> None:
    ctx = context(desired(sa.url, receivers=(ROUTED, PLAIN)))
    changes = receivers.plan(ctx)
    assert targets(changes) == [
        ("note", "receiver XNAT:8104"),  # XNAT's default receiver, not in the inventory
        ("create", "receiver STUDY1:8105"),
        ("create", "receiver RELAY:8106"),
    ]
    assert changes[0].apply is None
    assert changes[0].detail == "receiver XNAT:8104 not in the inventory; kept (use --prune)"
    assert changes[1].after == {
        "aeTitle": "STUDY1",
        "port": 8105,
        "identifier": "dicomObjectIdentifier",
        "enabled": True,
        "customProcessing": False,
        "directArchive": False,
        "anonymizationEnabled": True,
        "whitelistEnabled": True,
        "whitelist": ["10.1.2.3"],
        "routingExpressionsEnabled": True,
        "projectRoutingExpression": "(0008,0018):(.*):1 t:.+ r:STUDY1",
    }
    assert changes[2].after is not None
    assert changes[2].after["routingExpressionsEnabled"] is False
    assert "projectRoutingExpression" not in changes[2].after
    assert len(sa.state.receivers) == 1  # planning wrote nothing


def test_apply_converges_and_second_apply_changes_nothing(sa: XnatStandin) -> None:
    ctx = context(desired(sa.url, receivers=(ROUTED, PLAIN)))
    apply_all(receivers.plan(ctx))
    got = by_identity(sa)
    assert set(got) == {"XNAT:8104", "STUDY1:8105", "RELAY:8106"}
    assert got["STUDY1:8105"]["routingExpressionsEnabled"] is True
    assert got["STUDY1:8105"]["projectRoutingExpression"] == "(0008,0018):(.*):1 t:.+ r:STUDY1"
    assert got["RELAY:8106"]["anonymizationEnabled"] is False
    assert got["RELAY:8106"]["directArchive"] is True

    mark = len(sa.requests_log)
    again = receivers.plan(ctx)
    assert [c.action for c in again] == ["note"]  # only the unmanaged default receiver
    apply_all(again)
    assert not writes(sa.requests_log[mark:])


def test_drift_is_repaired_by_sending_the_whole_receiver(
    sa: XnatStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit D-4: most XNAT builds replace the receiver with the PUT body (a field left out comes
    back null or a default), so the whole receiver is sent, changed fields laid over."""
    ctx = context(desired(sa.url, receivers=(ROUTED, PLAIN)))
    apply_all(receivers.plan(ctx))
    rid = by_identity(sa)["STUDY1:8105"]["id"]
    # Behind the tool's back, as an admin would in the UI (§10), and a field we do not manage.
    with sa.state.lock:
        sa.state.receivers[rid].update(
            {"anonymizationEnabled": False, "whitelist": ["10.9.9.9"], "fileNamer": "mine"}
        )
    requests.put(
        f"{sa.url}/xapi/dicomscp/{rid}/enabled/false", auth=AUTH, timeout=10
    ).raise_for_status()

    changes = drift(receivers.plan(ctx))
    assert targets(changes) == [("update", "receiver STUDY1:8105")]
    assert changes[0].before == {
        "enabled": False,
        "anonymizationEnabled": False,
        "whitelist": ["10.9.9.9"],
    }
    assert changes[0].after == {
        "enabled": True,
        "anonymizationEnabled": True,
        "whitelist": ["10.1.2.3"],
    }
    sent = record_bodies(ctx, monkeypatch)
    apply_all(changes)
    assert [(m, p) for m, p, _ in sent] == [
        ("PUT", f"/xapi/dicomscp/{rid}"),
        ("PUT", f"/xapi/dicomscp/{rid}/enabled/true"),
    ]
    body = sent[0][2]
    assert body["anonymizationEnabled"] is True and body["whitelist"] == ["10.1.2.3"]
    # Everything else goes back as it was: identity, routing, the unmanaged field, the flag
    # (switched on by its own call afterwards).
    assert body["aeTitle"] == "STUDY1" and body["port"] == 8105 and body["id"] == rid
    assert body["identifier"] == "dicomObjectIdentifier" and body["fileNamer"] == "mine"
    assert body["routingExpressionsEnabled"] is True and body["enabled"] is False
    assert drift(receivers.plan(ctx)) == []
    assert by_identity(sa)["STUDY1:8105"]["fileNamer"] == "mine"  # fields we do not manage stay


def test_unlisted_receivers_are_deleted_only_with_prune(sa: XnatStandin) -> None:
    ctx = context(desired(sa.url, receivers=(PLAIN,)), prune=True)
    changes = receivers.plan(ctx)
    assert targets(changes) == [
        ("delete", "receiver XNAT:8104"),
        ("create", "receiver RELAY:8106"),
    ]
    apply_all(changes)
    assert receivers.plan(ctx) == []
    assert set(by_identity(sa)) == {"RELAY:8106"}


def test_two_desired_receivers_on_one_port_are_refused_before_any_request(
    sa: XnatStandin,
) -> None:
    twins = (ROUTED, Receiver(ae_title="OTHER", port=ROUTED.port))
    err = refused(
        sa, lambda: receivers.plan(context(desired(sa.url, receivers=twins))), "share port 8105"
    )
    assert (err.host, err.area) == ("test-host", "receivers")


def test_a_port_taken_by_an_unlisted_receiver_is_refused_unless_pruned(sa: XnatStandin) -> None:
    # XNAT itself would accept OTHER:8105 next to LEGACY:8105 (§10 duplicate-port trap).
    legacy = requests.post(
        sa.url + "/xapi/dicomscp",
        json={
            "aeTitle": "LEGACY",
            "port": 8105,
            "enabled": True,
            "identifier": "dicomObjectIdentifier",  # XNAT answers 400 without one (§10)
        },
        auth=AUTH,
        timeout=10,
    )
    assert legacy.status_code in (200, 201), legacy.text
    clash = Receiver(ae_title="OTHER", port=8105)
    mark = len(sa.requests_log)
    with pytest.raises(ReconcileError, match="port 8105 is already used by receiver LEGACY:8105"):
        receivers.plan(context(desired(sa.url, receivers=(clash,))))
    assert not writes(sa.requests_log[mark:])

    pruning = context(desired(sa.url, receivers=(clash,)), prune=True)
    changes = receivers.plan(pruning)
    assert targets(changes) == [
        ("delete", "receiver XNAT:8104"),
        ("delete", "receiver LEGACY:8105"),  # frees the port before the create
        ("create", "receiver OTHER:8105"),
    ]
    apply_all(changes)
    assert receivers.plan(pruning) == []
    assert set(by_identity(sa)) == {"OTHER:8105"}


def test_the_factory_default_receiver_gives_way_without_prune(sa: XnatStandin) -> None:
    # XNAT creates XNAT:8104 at first start (§1, §10); an inventory receiver on 8104 replaces it.
    relay = Receiver(ae_title="PRISM_RELAY", port=8104)
    ctx = context(desired(sa.url, receivers=(relay,)))
    changes = receivers.plan(ctx)
    assert targets(changes) == [
        ("delete", "receiver XNAT:8104"),
        ("create", "receiver PRISM_RELAY:8104"),
    ]
    assert "factory-default" in changes[0].detail
    apply_all(changes)
    assert receivers.plan(ctx) == []
    assert set(by_identity(sa)) == {"PRISM_RELAY:8104"}


def test_the_default_receiver_is_managed_when_listed(sa: XnatStandin) -> None:
    default = Receiver(ae_title="XNAT", port=8104, anonymization=False)
    ctx = context(desired(sa.url, receivers=(default,)))
    changes = receivers.plan(ctx)
    assert [(c.action, c.before, c.after) for c in changes] == [
        ("update", {"anonymizationEnabled": True}, {"anonymizationEnabled": False})
    ]
    apply_all(changes)
    assert receivers.plan(ctx) == []
    assert len(sa.state.receivers) == 1


def test_fresh_site_is_planned_without_any_request(standin: XnatStandin) -> None:
    default = Receiver(ae_title="XNAT", port=8104, anonymization=False)
    ctx = context(desired(standin.url, receivers=(default, PLAIN)), fresh=True)
    changes = receivers.plan(ctx)
    assert standin.requests_log == []
    assert targets(changes) == [
        ("update", "receiver XNAT:8104"),  # XNAT's default receiver (§1, §10)
        ("create", "receiver RELAY:8106"),
    ]
    pruned = receivers.plan(context(desired(standin.url), fresh=True, prune=True))
    assert targets(pruned) == [("delete", "receiver XNAT:8104")]
    assert standin.requests_log == []
    # The engine applies a fresh plan after bootstrap: ids are looked up then.
    initialise(standin.url)
    apply_all(changes)
    assert receivers.plan(context(desired(standin.url, receivers=(default, PLAIN)))) == []
