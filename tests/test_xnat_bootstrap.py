"""Bootstrap reconciler against the XNAT REST stand-in over real HTTP (docs/xnat-api.md §6, §18)."""

from __future__ import annotations

import dataclasses
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.xnat_helpers import (
    ADMIN_PASSWORD,
    AUTH,
    SERVICE_PASSWORD,
    SERVICE_USER,
    context,
    desired,
    initialise,
    run,
    shown,
    writes,
)
from tests.xnat_standin import XnatStandin
from xnat_fleet.model.fleet import ContainerService
from xnat_fleet.xnat.changes import Change, ReconcileError
from xnat_fleet.xnat.client import XnatAuthError
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.reconcilers import bootstrap
from xnat_fleet.xnat.reconcilers.bootstrap import SiteState


def detect(ctx: HostContext, attempts: int = 1) -> SiteState:
    return bootstrap.detect(ctx.desired, ctx.client, attempts=attempts, delay=0.05)


def targets(changes: list[Change]) -> list[str]:
    return [c.target for c in changes]


def assert_no_secret(changes: list[Change], *secrets: str) -> None:
    text = shown(changes)
    for secret in secrets:
        assert secret not in text


def bootstrap_fully(ctx: HostContext) -> None:
    run(bootstrap.plan(ctx, detect(ctx)))


ALL_STEPS = [
    "initialise site",
    "user admin password",
    f"service account {SERVICE_USER}",
    "siteConfig receivedFileUser, primaryAdminUsername",
    "user admin",
    "user guest",
]


def test_fresh_site_plans_every_step_in_order_without_a_request(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url), fresh=True)
    state = detect(ctx)
    assert state == SiteState(initialized=False, service_account=False, admin_password="initial")
    before = len(standin.requests_log)
    changes = bootstrap.plan(ctx, state)
    assert len(standin.requests_log) == before  # planning a fresh site reads nothing
    assert targets(changes) == ALL_STEPS
    init = changes[0]
    assert init.after == {
        "siteId": "TEST",
        "siteUrl": "https://test-host.example.org",
        "adminEmail": "admins@example.org",
        "archivePath": "/data/xnat/archive",
        "initialized": True,
    }
    assert changes[1].before == changes[1].after == "(secret)"
    assert changes[2].after["password"] == "(secret)"
    assert changes[2].after["roles"] == ["Administrator", "non_expiring"]
    assert changes[2].after["groups"] == ["ALL_DATA_ADMIN"]
    assert_no_secret(changes, ADMIN_PASSWORD, SERVICE_PASSWORD)


def test_apply_converges_and_leaves_the_documented_end_state(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url))
    run(bootstrap.plan(ctx, detect(ctx)))
    state = detect(ctx)
    assert state == SiteState(initialized=True, service_account=True, admin_password="disabled")
    assert bootstrap.plan(ctx, state) == []

    s = standin.state
    assert s.site_config["initialized"] is True
    assert s.site_config["siteUrl"] == "https://test-host.example.org"
    assert s.site_config["receivedFileUser"] == SERVICE_USER
    assert s.site_config["primaryAdminUsername"] == SERVICE_USER
    svc = s.users[SERVICE_USER]
    assert svc.enabled and svc.verified
    assert {"Administrator", "non_expiring"} <= set(svc.roles)
    assert "ALL_DATA_ADMIN" in svc.groups
    assert s.users["admin"].enabled is False
    assert s.users["admin"].verified is False
    assert s.users["admin"].password == ADMIN_PASSWORD  # rotated before being disabled
    assert s.users["guest"].enabled is False
    # The initial admin password is refused from now on (docs/xnat-api.md §6).
    r = requests.get(standin.url + "/xapi/siteConfig", auth=("admin", "admin"), timeout=5)
    assert r.status_code == 401


def test_disabling_comes_last(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url))
    run(bootstrap.plan(ctx, detect(ctx)))
    log = [f"{m} {p}" for m, p, _ in writes(standin.requests_log)]
    rotate, disable = (i for i, w in enumerate(log) if w == "PUT /xapi/users/admin")
    assert log.index("POST /xapi/siteConfig") < rotate < log.index("POST /xapi/users") < disable
    switch = max(i for i, w in enumerate(log) if w == "POST /xapi/siteConfig")
    assert switch < log.index("PUT /xapi/users/guest/enabled/false")
    assert log[-2:] == ["PUT /xapi/users/admin", "PUT /xapi/users/guest/enabled/false"]


def test_second_run_plans_and_writes_nothing(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url))
    bootstrap_fully(ctx)
    mark = len(standin.requests_log)
    changes = bootstrap.plan(ctx, detect(ctx))
    assert changes == []
    assert writes(standin.requests_log[mark:]) == []
    # No admin login was tried either: the service account reads admin's state (§6 step 2).
    assert standin.state.users["admin"].enabled is False


def test_plan_without_state_detects_itself(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url))
    assert targets(bootstrap.plan(ctx)) == ALL_STEPS


def test_drift_guest_and_admin_reenabled(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url))
    bootstrap_fully(ctx)
    # Behind the tool's back, with the service account over REST.
    r = requests.put(standin.url + "/xapi/users/guest/enabled/true", auth=AUTH, timeout=5)
    assert r.ok
    r = requests.put(
        standin.url + "/xapi/users/admin", json={"enabled": True}, auth=AUTH, timeout=5
    )
    assert r.ok
    state = detect(ctx)
    assert state.admin_password == "target"
    changes = bootstrap.plan(ctx, state)
    assert targets(changes) == ["user admin", "user guest"]
    run(changes)
    assert bootstrap.plan(ctx, detect(ctx)) == []


def test_drift_received_file_user_and_service_roles(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url))
    bootstrap_fully(ctx)
    standin.state.site_config["receivedFileUser"] = "admin"
    standin.state.users[SERVICE_USER].roles.remove("non_expiring")
    standin.state.users[SERVICE_USER].groups.remove("ALL_DATA_ADMIN")
    state = detect(ctx)
    assert state.missing_roles == ("non_expiring",)
    assert state.missing_groups == ("ALL_DATA_ADMIN",)
    changes = bootstrap.plan(ctx, state)
    assert targets(changes) == [
        f"service account {SERVICE_USER}",
        "siteConfig receivedFileUser, primaryAdminUsername",
    ]
    assert changes[1].before == {"receivedFileUser": "admin", "primaryAdminUsername": SERVICE_USER}
    run(changes)
    assert bootstrap.plan(ctx, detect(ctx)) == []
    assert "non_expiring" in standin.state.users[SERVICE_USER].roles


def test_container_service_adds_container_manager_role(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url, container_service=ContainerService()))
    changes = bootstrap.plan(ctx, detect(ctx))
    assert changes[2].after["roles"] == ["Administrator", "non_expiring", "ContainerManager"]
    run(changes)
    assert "ContainerManager" in standin.state.users[SERVICE_USER].roles
    assert bootstrap.plan(ctx, detect(ctx)) == []


def test_rotated_admin_without_service_account(standin: XnatStandin) -> None:
    """Initialised and rotated by hand (e.g. an earlier partial run): continue from there."""
    auth = ("admin", "admin")
    r = requests.post(
        standin.url + "/xapi/siteConfig",
        json={
            "siteId": "TEST",
            "siteUrl": "https://test-host.example.org",
            "adminEmail": "admins@example.org",
            "initialized": True,
        },
        auth=auth,
        timeout=5,
    )
    assert r.ok
    r = requests.put(
        standin.url + "/xapi/users/admin", json={"password": ADMIN_PASSWORD}, auth=auth, timeout=5
    )
    assert r.ok
    ctx = context(desired(standin.url))
    state = detect(ctx)
    assert state == SiteState(initialized=True, service_account=False, admin_password="target")
    changes = bootstrap.plan(ctx, state)
    assert targets(changes) == ALL_STEPS[2:]
    run(changes)
    assert bootstrap.plan(ctx, detect(ctx)) == []


def test_existing_service_account_that_is_not_an_admin(standin: XnatStandin) -> None:
    """A 409 on create: the toolkit's own account gets its password, flags and roles back."""
    ctx = context(desired(standin.url))
    initialise(standin.url)
    svc = standin.state.users[SERVICE_USER]
    svc.roles.clear()
    svc.password = "someone-changed-it"
    svc.enabled = False
    state = detect(ctx)
    assert state.service_account is False
    assert state.admin_password == "initial"
    changes = bootstrap.plan(ctx, state)
    assert f"service account {SERVICE_USER}" in targets(changes)
    run(changes)
    assert svc.password == SERVICE_PASSWORD and svc.enabled
    assert bootstrap.plan(ctx, detect(ctx)) == []


def test_service_account_that_lost_administrator_is_not_taken_for_an_admin(
    standin: XnatStandin,
) -> None:
    """Audit B-1: after initialisation XNAT answers a non-admin's GET /xapi/siteConfig with 200
    and the keys every user may read, so admin detection asks the admin-only key instead."""
    ctx = context(desired(standin.url))
    initialise(standin.url)
    svc = standin.state.users[SERVICE_USER]
    svc.roles.remove("Administrator")  # it still logs in with its password
    r = requests.get(standin.url + "/xapi/siteConfig/initialized", auth=AUTH, timeout=5)
    assert r.status_code == 403  # the key is admin-only
    state = detect(ctx)
    assert state.service_account is False
    assert state.admin_password == "initial"
    changes = bootstrap.plan(ctx, state)
    run(changes)
    assert "Administrator" in svc.roles
    assert bootstrap.plan(ctx, detect(ctx)) == []


def test_admin_password_refused_is_disabled_not_guessed(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url))
    bootstrap_fully(ctx)
    admin = standin.state.users["admin"]
    admin.enabled = True
    admin.password = "unknown-to-the-inventory"
    state = detect(ctx)
    assert state.admin_password == "refused"
    changes = bootstrap.plan(ctx, state)
    assert targets(changes) == ["user admin"]  # no rotation with a password we do not know
    run(changes)
    assert admin.enabled is False
    assert bootstrap.plan(ctx, detect(ctx)) == []


def test_no_credential_works_is_a_clear_error(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url))
    bootstrap_fully(ctx)
    standin.state.users[SERVICE_USER].password = "rotated-elsewhere"
    mark = len(standin.requests_log)
    with pytest.raises(XnatAuthError) as caught:
        detect(ctx, attempts=3)
    message = str(caught.value)
    assert "test-host" in message
    assert "none of the credentials works" in message
    assert caught.value.status == 401
    for secret in (ADMIN_PASSWORD, SERVICE_PASSWORD):
        assert secret not in message
    # Bounded retry of the admin logins: 3 attempts x (target, initial), nothing written.
    probe = ("GET", "/xapi/siteConfig/initialized", 401)  # the admin-only read (§6, §7)
    admin_probes = [r for r in standin.requests_log[mark:] if r == probe]
    assert len(admin_probes) == 1 + 3 * 2
    assert writes(standin.requests_log[mark:]) == []


def test_first_admin_login_is_retried_while_admin_is_missing(standin: XnatStandin) -> None:
    """docs/xnat-api.md §6 step 1: admin may be missing for a short while after Tomcat answers."""
    admin = standin.state.users.pop("admin")

    def comes_back() -> None:
        time.sleep(0.2)
        standin.state.users["admin"] = admin

    thread = threading.Thread(target=comes_back)
    thread.start()
    try:
        ctx = context(desired(standin.url))
        state = bootstrap.detect(ctx.desired, ctx.client, attempts=40, delay=0.05)
    finally:
        thread.join()
    assert state == SiteState(initialized=False, service_account=False, admin_password="initial")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"siteUrl": ""}, "siteUrl"),
        ({"siteId": "1bad-id"}, "siteId"),
        ({"adminEmail": ""}, "adminEmail"),
        ({"siteUrl": "test-host.example.org"}, "http(s) URL"),
        ({"archivePath": "data/xnat"}, "absolute path"),
    ],
)
def test_invalid_site_keys_refused_before_any_request(
    standin: XnatStandin, overrides: dict[str, str], message: str
) -> None:
    base = desired(standin.url)
    d = dataclasses.replace(base, site_config={**base.site_config, **overrides})
    ctx = context(d)
    with pytest.raises(ReconcileError) as caught:
        detect(ctx)
    assert message in str(caught.value)
    assert caught.value.host == "test-host" and caught.value.area == "bootstrap"
    with pytest.raises(ReconcileError):
        bootstrap.plan(ctx, SiteState(False, False, "initial"))
    assert standin.requests_log == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"admin_password": "admin"},
        {"admin_password": ""},
        {"service_password": ""},
        {"service_user": "admin"},
    ],
)
def test_invalid_accounts_refused_before_any_request(
    standin: XnatStandin, overrides: dict[str, str]
) -> None:
    ctx = context(desired(standin.url, **overrides))
    with pytest.raises(ReconcileError):
        detect(ctx)
    assert standin.requests_log == []


class _LoginPage(BaseHTTPRequestHandler):
    """Answers every request with XNAT's HTML login page (a refused login on some versions)."""

    hits: list[str] = []  # noqa: RUF012  # reset per test

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        body = b"<html><body>Login</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


def test_login_page_instead_of_401_counts_as_refused() -> None:
    _LoginPage.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _LoginPage)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        ctx = context(desired(f"http://127.0.0.1:{httpd.server_address[1]}"))
        with pytest.raises(XnatAuthError) as caught:
            detect(ctx, attempts=2)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "login page" in str(caught.value)
    # service, then 2 x (target, initial), each asking the admin-only key (docs/xnat-api.md §7)
    assert _LoginPage.hits == ["/xapi/siteConfig/initialized"] * 5
