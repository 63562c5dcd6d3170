"""Contract tests against a real XNAT: skipped unless ``XNAT_URL`` is set.

    XNAT_URL=https://xnat.example.org XNAT_USER=admin XNAT_PASSWORD=... \\
    [XNAT_CA_FILE=study-ca.crt] [XNAT_SCRATCH_PORT=8199] .venv/bin/pytest tests/test_xnat_live.py

The account must be a site administrator. The tests only touch things they create with a
random suffix: a private project ``XFC<suffix>`` with a project anonymization script, a local
user ``xfc_<suffix>`` and a DICOM receiver ``XFC<suffix>`` on ``XNAT_SCRATCH_PORT`` (disabled).
They run the same reconcilers as against the stand-in: plan lists the changes, apply converges,
a second plan is empty, a change made behind the tool's back shows as drift. XNAT has no API to
delete a project's users or the project itself without data loss rules, so the scratch project
stays (private, empty); the receiver is removed at the end.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.xnat_helpers import desired, project
from xnat_fleet.model.fleet import Receiver, XnatUser
from xnat_fleet.xnat.changes import Change
from xnat_fleet.xnat.client import XnatClient
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.reconcilers import anonymization, projects, receivers, users

URL = os.environ.get("XNAT_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="XNAT_URL not set: no real XNAT to test against")

Planner = Callable[[HostContext], list[Change]]


@pytest.fixture(scope="module")
def live() -> Iterator[HostContext]:
    user = os.environ["XNAT_USER"]
    password = os.environ["XNAT_PASSWORD"]
    suffix = secrets.token_hex(3).upper()
    port = int(os.environ.get("XNAT_SCRATCH_PORT", "8199"))
    d = desired(URL.rstrip("/"), service_user=user, service_password=password)
    d = dataclasses.replace(
        d,
        ca_file=os.environ.get("XNAT_CA_FILE"),
        projects=(
            project(
                f"XFC{suffix}",
                accessibility="private",
                prearchive_code=0,
                anon_script='version "6.1"\n(0010,0010) := subject\n',
                anon_enabled=True,
            ),
        ),
        users=(
            XnatUser(
                username=f"xfc_{suffix.lower()}",
                first_name="xnat-fleet",
                last_name="contract test",
                email="xnat-fleet-contract@example.org",
            ),
        ),
        user_passwords={f"xfc_{suffix.lower()}": secrets.token_urlsafe(16)},
        receivers=(Receiver(ae_title=f"XFC{suffix}", port=port, enabled=False),),
    )
    client = XnatClient(d.url, user, password, ca_file=d.ca_file, secrets=d.secrets)
    ctx = HostContext(desired=d, client=client)
    yield ctx
    for r in client.get_json("/xapi/dicomscp"):
        if r.get("aeTitle") == f"XFC{suffix}":
            client.request("DELETE", f"/xapi/dicomscp/{r['id']}")
    client.close()


AREAS: list[tuple[str, Planner]] = [
    ("users", users.plan),
    ("projects", projects.plan),
    ("anonymization", anonymization.plan),
    ("receivers", receivers.plan),
]


def test_live_xnat_answers_json_with_a_version(live: HostContext) -> None:
    info = live.client.get_json("/xapi/siteConfig/buildInfo")
    assert info.get("version"), info


@pytest.mark.parametrize(("area", "plan"), AREAS, ids=[a for a, _ in AREAS])
def test_live_plan_apply_converges(live: HostContext, area: str, plan: Planner) -> None:
    first = [c for c in plan(live) if c.is_drift]
    assert first, f"{area}: a fresh scratch object must need changes"
    for change in first:
        assert change.apply is not None
        change.apply()
    assert [c for c in plan(live) if c.is_drift] == []


def test_live_drift_is_detected(live: HostContext) -> None:
    pid = live.desired.projects[0].project.id
    auth = (live.desired.service_user, live.desired.service_password)
    r = requests.put(
        f"{live.desired.url}/data/projects/{pid}/accessibility/protected",
        auth=auth,
        verify=live.desired.ca_file or True,
        timeout=30,
    )
    assert r.status_code == 200, r.status_code
    drift = [c for c in projects.plan(live) if c.is_drift]
    assert [c.target for c in drift], "accessibility changed behind the tool's back"
    for change in drift:
        assert change.apply is not None
        change.apply()
    assert [c for c in projects.plan(live) if c.is_drift] == []


def test_live_xnat_quirks_the_engine_relies_on(live: HostContext) -> None:
    """The audit's findings the reconcilers are built on (docs/xnat-api.md §8, §11, §12), read
    from the real server: an unknown login is a 500 on GET /xapi/users/{u} yet absent from the
    login listing; the anonymization flag PUT needs application/json; the event-service
    subscription listing answers 200 (an empty body while the service is off)."""
    c = live.client
    ghost = f"xfc_absent_{secrets.token_hex(4)}"
    assert ghost not in c.get_json("/xapi/users")
    assert c.request("GET", f"/xapi/users/{ghost}", ok=range(100, 600)).status_code == 500
    current = c.get_json("/xapi/anonymize/site/enabled")
    flag = "true" if current in (True, "true") else "false"  # writes back what is there
    bare = c.request(
        "PUT", "/xapi/anonymize/site/enabled", params={"enable": flag}, ok=range(100, 600)
    )
    assert bare.status_code == 415
    c.request(
        "PUT",
        "/xapi/anonymize/site/enabled",
        params={"enable": flag},
        text="",
        content_type="application/json",
    )
    listing = c.request("GET", "/xapi/events/subscriptions", ok=(200,))
    assert listing.status_code == 200
