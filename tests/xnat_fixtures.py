"""Pytest fixtures shared by the XNAT reconciler tests (loaded by tests/conftest.py).

``standin``: a running XNAT REST stand-in as XNAT ships it (not initialised: bootstrap's start).
``sa``: a running stand-in in the state bootstrap leaves (tests/xnat_helpers.initialise), with an
empty request log. A test module that needs more on it overrides ``sa`` and asks for this one::

    @pytest.fixture
    def sa(sa: XnatStandin) -> XnatStandin:
        add_projects(sa, "P1")
        return sa

``profile_sa``: like ``sa``, once per stand-in profile (``STANDIN_PROFILES`` in
tests/xnat_standin/state.py: "1.8", "1.9", "1.9-bff1f28", "1.10"), so that a contract test runs
against every version-dependent behaviour the toolkit must handle. Its test id names the
profile (``test_x[1.10]``); ``profile_sa.state.profile`` / ``.state.version`` tell the test which
one it got (``tests.xnat_helpers.desired_for(profile_sa)`` builds a matching ``DesiredXnat``).
Extra ``XnatStandin``/``running_standin`` keyword arguments (e.g. ``xsync=True``,
``name="relay"``) come from a marker on the test, module or class::

    @pytest.mark.standin(xsync=True)
    def test_prefs(profile_sa: XnatStandin) -> None: ...

or, to pick profiles as well, from indirect parametrisation with a profile name or a dict
``{"profile": name, **kwargs}`` (the marker's arguments are applied first)::

    @pytest.mark.parametrize("profile_sa", [{"profile": "1.10", "xsync": True}], indirect=True)
    def test_java21_prefs(profile_sa: XnatStandin) -> None: ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.xnat_helpers import running_standin
from tests.xnat_standin import STANDIN_PROFILES, XnatStandin


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "standin(**kwargs): XnatStandin keyword arguments for the profile_sa fixture "
        "(tests/xnat_fixtures.py)",
    )


@pytest.fixture
def standin() -> Iterator[XnatStandin]:
    """A running stand-in, not initialised (the initial admin password still works)."""
    with running_standin(initialised=False) as fresh:
        yield fresh


@pytest.fixture
def sa() -> Iterator[XnatStandin]:
    """A running, initialised stand-in (service account ready) with an empty request log."""
    with running_standin() as ready:
        yield ready


@pytest.fixture(params=list(STANDIN_PROFILES), ids=list(STANDIN_PROFILES))
def profile_sa(request: pytest.FixtureRequest) -> Iterator[XnatStandin]:
    """``sa`` for one stand-in profile (see the module docstring for markers and parameters)."""
    kwargs: dict[str, Any] = {}
    marker = request.node.get_closest_marker("standin")
    if marker is not None:
        kwargs.update(marker.kwargs)
    param = request.param
    if isinstance(param, dict):
        kwargs.update(param)
    else:
        kwargs["profile"] = param
    with running_standin(**kwargs) as ready:
        yield ready
