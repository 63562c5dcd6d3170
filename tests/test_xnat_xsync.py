"""Xsync pairing reconciler and operations against two XNAT REST stand-ins over real HTTP.

A relay stand-in (with the Xsync plugin) and a central stand-in; the relay really calls the
central when credentials are saved and checked (docs/xnat-api.md §16.4).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.xnat_helpers import (
    AUTH,
    SERVICE_USER,
    client,
    desired,
    pairing,
    project,
    run,
    running_standin,
    targets,
    writes,
)
from tests.xnat_standin import XnatStandin
from xnat_fleet.model.fleet import XsyncPreferences
from xnat_fleet.xnat import xsync_ops
from xnat_fleet.xnat.changes import SECRET, Change, ReconcileError
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat
from xnat_fleet.xnat.reconcilers import bootstrap, xsync
from xnat_fleet.xnat.reconcilers.xsync import XsyncError

RELAY = "relay-1"
CENTRAL = "central-host"
ACCOUNT = "xsync_relay_1"  # tests/xnat_helpers.pairing() names it after the relay
PREFS = XsyncPreferences(token_refresh_interval="6 hours", retry_count=3)


def create_project(url: str, pid: str) -> None:
    """What the projects reconciler leaves behind (docs/xnat-api.md §9: XML create)."""
    body = (
        f'<xnat:projectData xmlns:xnat="http://nrg.wustl.edu/xnat" ID="{pid}" '
        f'secondary_ID="{pid}"><xnat:name>{pid}</xnat:name></xnat:projectData>'
    )
    r = requests.post(
        url + "/data/projects",
        data=body,
        headers={"Content-Type": "text/xml"},
        auth=AUTH,
        timeout=10,
    )
    assert r.status_code in (200, 201), r.status_code


@dataclass
class Pair:
    relay: XnatStandin
    central: XnatStandin
    relay_desired: DesiredXnat
    central_desired: DesiredXnat
    seen: list[str] = field(default_factory=list)  # every text shown to a person: secret grep

    def ctx(self, *, fresh: bool = False, **changes: Any) -> HostContext:
        d = dataclasses.replace(self.relay_desired, **changes)
        central_url = self.central.url

        def connect() -> Any:
            return client(central_url)

        return HostContext(
            desired=d,
            client=client(d.url),
            fresh=fresh,
            peers={CENTRAL: (self.central_desired, connect)},
        )

    def plan(self, ctx: HostContext) -> list[Change]:
        changes = xsync.plan(ctx)
        for c in changes:
            self.seen.append(c.render())
            self.seen.append(repr(c.to_dict()))
        return changes

    def converge(self, ctx: HostContext) -> None:
        run(self.plan(ctx))
        assert self.plan(ctx) == []

    def raises(self, exc: type[Exception], fn: Callable[[], Any]) -> str:
        with pytest.raises(exc) as info:
            fn()
        text = str(info.value)
        self.seen.append(text)
        return text

    def token_secrets(self) -> list[str]:
        return [t.secret for t in self.central.state.tokens.values()]


@contextmanager
def make_pair(
    relay_kwargs: dict[str, Any] | None = None,
    central_kwargs: dict[str, Any] | None = None,
    *,
    central_project: bool = True,
) -> Iterator[Pair]:
    """Two running, initialised stand-ins (relay with Xsync; central), stopped afterwards."""
    with ExitStack() as stack:
        relay = stack.enter_context(
            running_standin(xsync=True, name="relay", **(relay_kwargs or {}))
        )
        central = stack.enter_context(running_standin(name="central", **(central_kwargs or {})))
        create_project(relay.url, "P1")
        if central_project:
            create_project(central.url, "Q1")
        for s in (relay, central):
            s.requests_log.clear()  # tests look at what the reconciler sent, not at the setup
        link = pairing(RELAY, "P1", "Q1", central.url)
        relay_d = desired(
            relay.url, host=RELAY, pairings=(link,), xsync_prefs=PREFS, xsync_plugin_version="1.8.1"
        )
        central_d = desired(central.url, host=CENTRAL, kind="central", projects=(project("Q1"),))
        yield Pair(relay, central, relay_d, central_d)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with make_pair() as p:
        yield p
        # No alias secret in any Change, message or exception a test produced.
        secrets = p.token_secrets()
        for text in p.seen:
            for secret in secrets:
                assert secret not in text


def test_empty_pairing_plan_lists_everything(pair: Pair) -> None:
    changes = pair.plan(pair.ctx())
    assert targets(changes) == [
        ("create", f"{CENTRAL}: user {ACCOUNT}"),
        ("create", f"{CENTRAL}: project Q1 owner {ACCOUNT}"),
        ("update", "xsync site preferences"),
        ("create", "project P1 sync config"),
        ("run", f"project P1 credentials for {pair.central.url}"),
    ]
    account, _owner, prefs, config, creds = changes
    assert account.after["password"] == SECRET
    assert prefs.after == {
        "tokenRefreshInterval": "6 hours",
        "syncRetryCount": "3",  # a string in the plugin's bean (§16.2)
        "syncMaxUncompressedZipFileSize": 1073741824,
    }
    assert config.after["remote_url"] == pair.central.url
    assert config.after["source_project_id"] == "P1"
    assert config.after["remote_project_id"] == "Q1"
    assert config.after["notification_emails"] == "admins@example.org"
    assert creds.after["secret"] == SECRET
    assert writes(pair.relay.requests_log) == []
    assert writes(pair.central.requests_log) == []


def test_apply_converges_and_credentials_check_ok(pair: Pair) -> None:
    ctx = pair.ctx()
    pair.converge(ctx)
    user = pair.central.state.users[ACCOUNT]
    assert user.enabled and user.verified and user.roles == []
    assert pair.central.state.projects["Q1"].members[ACCOUNT] == "owner"
    assert pair.relay.state.xsync_site_prefs["syncRetryCount"] == "3"
    assert pair.relay.state.xsync_configs["P1"]["remote_url"] == pair.central.url
    # The relay's own check answers 200 (docs/xnat-api.md §16.4 step 3), over real HTTP.
    r = requests.post(
        pair.relay.url + "/xapi/xsync/credentials/check/projects/P1",
        data=f'{{"host": "{pair.central.url}", "localProject": "P1"}}',
        headers={"Content-Type": "text/plain"},
        auth=AUTH,
        timeout=10,
    )
    assert r.status_code == 200
    # A second round changes nothing: the plan is empty and planning sent no request that
    # changes state, not even the credential check (a POST that logs in on the central).
    mark_r, mark_c = len(pair.relay.requests_log), len(pair.central.requests_log)
    assert pair.plan(ctx) == []
    assert writes(pair.relay.requests_log[mark_r:]) == []
    assert writes(pair.central.requests_log[mark_c:]) == []


def test_expired_tokens_show_up_and_rekey_fixes_them(pair: Pair) -> None:
    ctx = pair.ctx()
    pair.converge(ctx)
    pair.central.state.expire_all_tokens()
    # Whether a token still works is an operation, not a plan (no POST while planning):
    # `xsync status` runs the check and shows it; `xsync rekey` repairs it.
    assert pair.plan(ctx) == []
    assert xsync_ops.status(ctx)[0]["credentials_ok"] is False
    messages = xsync_ops.rekey(ctx)
    pair.seen.extend(messages)
    assert len(messages) == 1
    assert "P1" in messages[0] and "Q1" in messages[0] and ACCOUNT in messages[0]
    assert pair.plan(ctx) == []
    assert xsync_ops.status(ctx)[0]["credentials_ok"] is True
    unknown = pair.raises(ReconcileError, lambda: xsync_ops.rekey(ctx, ["NOPE"]))
    assert "NOPE" in unknown


def test_member_shows_ownership_drift_and_save_answers_202(pair: Pair) -> None:
    """Chosen behaviour: the plan shows the ownership drift (and nothing else, the token still
    works); saving credentials while the account is only a Member is an error (202, §16.4)."""
    ctx = pair.ctx()
    pair.converge(ctx)
    pair.central.state.projects["Q1"].members[ACCOUNT] = "member"
    changes = pair.plan(ctx)
    assert targets(changes) == [("update", f"{CENTRAL}: project Q1 owner {ACCOUNT}")]
    assert changes[0].before == {"level": "member"}
    assert changes[0].after == {"level": "owner"}
    text = pair.raises(XsyncError, lambda: xsync_ops.rekey(ctx))
    assert "202" in text and "Owner" in text and ACCOUNT in text
    pair.converge(ctx)
    assert pair.central.state.projects["Q1"].members[ACCOUNT] == "owner"


def test_collaborator_save_answers_403(pair: Pair) -> None:
    ctx = pair.ctx()
    pair.converge(ctx)
    pair.central.state.projects["Q1"].members[ACCOUNT] = "collaborator"
    text = pair.raises(XsyncError, lambda: xsync_ops.rekey(ctx))
    assert "403" in text and "Collaborator" in text


def test_drift_in_config_prefs_and_account(pair: Pair) -> None:
    ctx = pair.ctx()
    pair.converge(ctx)
    cfg = pair.relay.state.xsync_configs["P1"]
    cfg["sync_frequency"] = "daily"
    cfg["imaging_sessions"] = {
        "sync_type": "include",
        "xsi_types": [{"xsi_type": "xnat:mrSessionData"}],
    }
    pair.relay.state.xsync_site_prefs["syncRetryCount"] = "5"
    user = pair.central.state.users[ACCOUNT]
    user.enabled = False
    user.roles.append("Administrator")
    changes = pair.plan(ctx)
    assert targets(changes) == [
        ("update", f"{CENTRAL}: user {ACCOUNT}"),
        ("delete", f"{CENTRAL}: user {ACCOUNT} role Administrator"),
        # XNAT lists enabled members only (docs/xnat-api.md §9): the disabled account's
        # ownership is invisible, so it is made an Owner again (harmless if it still is).
        ("create", f"{CENTRAL}: project Q1 owner {ACCOUNT}"),
        ("update", "xsync site preferences"),
        ("update", "project P1 sync config"),
    ]
    assert changes[3].after == {"syncRetryCount": "3"}
    assert changes[4].before == {
        "sync_frequency": "daily",
        "imaging_sessions": {
            "sync_type": "include",
            "xsi_types": [{"xsi_type": "xnat:mrSessionData"}],
        },
    }
    assert changes[4].after == {
        "sync_frequency": "hourly",
        "imaging_sessions": {"sync_type": "all"},
    }
    pair.converge(ctx)
    assert user.enabled and user.roles == []
    # Keys the inventory does not manage survive the update (the setup stores the whole document).
    assert pair.relay.state.xsync_configs["P1"]["imaging_sessions"]["xsi_types"]


def test_central_project_missing_is_created_first() -> None:
    with make_pair(central_project=False) as pair:
        ctx = pair.ctx()
        changes = pair.plan(ctx)
        assert targets(changes)[0] == ("create", f"{CENTRAL}: project Q1")
        pair.converge(ctx)
        assert pair.central.state.projects["Q1"].members[ACCOUNT] == "owner"


def test_fresh_relay_plans_without_requests() -> None:
    with (
        running_standin(initialised=False, xsync=True) as relay,
        running_standin(initialised=False, name="central") as central,
    ):
        link = pairing(RELAY, "P1", "Q1", central.url)
        relay_d = desired(relay.url, host=RELAY, pairings=(link,), xsync_prefs=PREFS)
        central_d = desired(central.url, host=CENTRAL, kind="central")  # Q1 not in its inventory
        pair = Pair(relay, central, relay_d, central_d)
        changes = pair.plan(pair.ctx(fresh=True))
        assert [c.action for c in changes] == [
            "create",
            "create",
            "create",
            "update",
            "create",
            "run",
        ]
        assert changes[0].target == f"{CENTRAL}: project Q1"
        assert relay.requests_log == []
        assert central.requests_log == []


def test_version_mismatch_refused_before_any_write() -> None:
    with make_pair(central_kwargs={"version": "1.9.1"}) as pair:
        text = pair.raises(ReconcileError, lambda: pair.plan(pair.ctx()))
        assert "1.9.3.6" in text and "1.9.1" in text
        assert writes(pair.relay.requests_log) == []
        assert writes(pair.central.requests_log) == []
        # Versions pinned differently in the inventory: refused before any request at all.
        pair.central_desired = dataclasses.replace(pair.central_desired, version="1.10.0")
        n_r, n_c = len(pair.relay.requests_log), len(pair.central.requests_log)
        text = pair.raises(ReconcileError, lambda: pair.plan(pair.ctx()))
        assert "1.10.0" in text
        assert len(pair.relay.requests_log) == n_r and len(pair.central.requests_log) == n_c


def test_wrong_content_type_is_a_clear_415_error() -> None:
    """A Java-21 Xsync build on an XNAT that reports 1.9: the toolkit sends what 1.9 calls for
    (text/plain) and the plugin answers 415, reported with both content types."""
    with make_pair(relay_kwargs={"xsync_build": "java21"}) as pair:
        ctx = pair.ctx()
        changes = pair.plan(ctx)
        prefs = next(c for c in changes if c.target == "xsync site preferences")
        run(changes[: changes.index(prefs)])
        assert prefs.apply is not None
        text = pair.raises(XsyncError, prefs.apply)
        assert "415" in text and "text/plain" in text and "application/json" in text
        assert "xsyncSitePreferences" in text
        assert "1.9.3.6" in text
        config = next(c for c in changes if c.target == "project P1 sync config")
        assert config.apply is not None
        text = pair.raises(XsyncError, config.apply)
        assert "415" in text and "setup/projects/P1" in text
        assert "1.8.2-SNAPSHOT" in text  # the plugin's version, from GET /xapi/plugins (§14)


def test_site_preferences_are_text_plain_on_java_8_builds(pair: Pair) -> None:
    """Audit X-2: the Java-8 builds' POST /xapi/xsyncSitePreferences consumes text/plain."""
    r = requests.post(
        pair.relay.url + "/xapi/xsyncSitePreferences",
        json={"syncRetryCount": "4"},
        auth=AUTH,
        timeout=10,
    )
    assert r.status_code == 415  # what the toolkit used to send
    pair.converge(pair.ctx())
    assert pair.relay.state.xsync_site_prefs["syncRetryCount"] == "3"


def test_json_content_type_and_xsync_administrator_on_xnat_1_10() -> None:
    """XNAT 1.10 (Java-21 Xsync build): JSON everywhere, and the site preferences only for
    holders of XsyncAdministrator, site admins included; bootstrap grants it to the service
    account of a relay that pairs projects."""
    with make_pair(
        relay_kwargs={"profile": "1.10", "grant_xsync_administrator": False},
        central_kwargs={"profile": "1.10"},
    ) as pair:
        pair.relay_desired = dataclasses.replace(pair.relay_desired, version="1.10.0")
        pair.central_desired = dataclasses.replace(pair.central_desired, version="1.10.0")
        ctx = pair.ctx()
        r = requests.get(pair.relay.url + "/xapi/xsyncSitePreferences", auth=AUTH, timeout=10)
        assert r.status_code == 403  # an Administrator without the role
        assert bootstrap.needs_xsync_role(ctx.desired)
        run(bootstrap.plan(ctx))
        assert "XsyncAdministrator" in pair.relay.state.users[SERVICE_USER].roles
        pair.converge(ctx)
        assert pair.relay.state.xsync_credentials[("P1", pair.central.url)]["username"] == ACCOUNT
        assert pair.relay.state.xsync_site_prefs["syncRetryCount"] == "3"


def test_invalid_desired_state_raises_before_any_request(pair: Pair) -> None:
    link = pair.relay_desired.pairings[0]
    slash = dataclasses.replace(link, central_url=pair.central.url + "/")
    other = dataclasses.replace(link, central_host="nowhere")
    cases = {
        "already syncs": (link, link),
        "trailing slash": (slash,),
        "not reachable": (other,),
    }
    n_r, n_c = len(pair.relay.requests_log), len(pair.central.requests_log)
    for needle, pairings in cases.items():
        ctx = pair.ctx(pairings=pairings)
        text = pair.raises(ReconcileError, functools.partial(pair.plan, ctx))
        assert needle in text and RELAY in text
    text = pair.raises(ReconcileError, lambda: pair.plan(pair.ctx(kind="central")))
    assert "relays" in text
    assert len(pair.relay.requests_log) == n_r and len(pair.central.requests_log) == n_c


def test_no_pairings_plans_nothing(pair: Pair) -> None:
    n = len(pair.relay.requests_log)
    assert pair.plan(pair.ctx(pairings=())) == []
    assert len(pair.relay.requests_log) == n


def test_status_and_unblock(pair: Pair) -> None:
    ctx = pair.ctx()
    before = xsync_ops.status(ctx)
    assert before[0]["configured"] is False and before[0]["credentials_ok"] is False
    pair.converge(ctx)
    # docs/xnat-api.md §16.5: a ProjectSyncStatus (in memory, per node).
    pair.relay.state.xsync_status["P1"] = {
        "isSyncing": False,
        "syncType": "SCHEDULED",
        "syncStartTime": "2026-11-30 02:00:00",
        "syncEndTime": "2026-11-30 02:04:10",
        "wasSyncSuccessful": True,
    }
    rows = xsync_ops.status(ctx)
    assert rows == [
        {
            "project": "P1",
            "central_project": "Q1",
            "central_url": pair.central.url,
            "configured": True,
            "configured_for_central": True,
            "credentials_ok": True,
            "credentials_check_status": 200,
            "syncing": False,
            "last_sync_type": "SCHEDULED",
            "last_sync_start": "2026-11-30 02:00:00",
            "last_sync_end": "2026-11-30 02:04:10",
            "last_sync_successful": True,
        }
    ]
    pair.central.state.expire_all_tokens()
    assert xsync_ops.status(ctx)[0]["credentials_ok"] is False
    pair.relay.state.xsync_blocked["P1"] = True
    pair.seen.append(xsync_ops.unblock(ctx, "P1"))
    assert "P1" not in pair.relay.state.xsync_blocked
    create_project(pair.relay.url, "P2")
    text = pair.raises(XsyncError, lambda: xsync_ops.unblock(ctx, "P2"))
    assert "not configured" in text and "404" in text


def test_no_secret_leaks_anywhere(pair: Pair) -> None:
    """Drive every path that handles a token, then grep what was shown (the fixture greps too)."""
    ctx = pair.ctx()
    pair.converge(ctx)
    pair.central.state.expire_all_tokens()
    pair.plan(ctx)
    pair.seen.extend(xsync_ops.rekey(ctx))
    pair.central.state.projects["Q1"].members[ACCOUNT] = "member"
    pair.raises(XsyncError, lambda: xsync_ops.rekey(ctx))
    secrets = pair.token_secrets()
    assert len(secrets) == 3  # apply, rekey, failed rekey: three tokens issued
    assert pair.seen
    joined = "\n".join(pair.seen)
    assert all(s not in joined for s in secrets)


def test_interrupted_keying_is_run_again(pair: Pair) -> None:
    """The configuration is posted switched off and switched on only after the credentials were
    saved and checked: a run that stopped in between leaves it off, and the next plan re-keys."""
    ctx = pair.ctx()
    changes = pair.plan(ctx)
    config = next(c for c in changes if c.target == "project P1 sync config")
    run(changes[: changes.index(config) + 1])  # stopped before the credentials
    assert pair.relay.state.xsync_configs["P1"]["enabled"] is False
    again = pair.plan(ctx)
    assert targets(again)[-1] == ("run", f"project P1 credentials for {pair.central.url}")
    assert "keying not finished" in again[-1].before
    pair.converge(ctx)
    assert pair.relay.state.xsync_configs["P1"]["enabled"] is True
