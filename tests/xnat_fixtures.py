"""Pytest fixtures shared by the XNAT reconciler tests (loaded by tests/conftest.py).

``standin``: a running XNAT REST stand-in as XNAT ships it (not initialised: bootstrap's start).
``sa``: a running stand-in in the state bootstrap leaves (tests/xnat_helpers.initialise), with an
empty request log. A test module that needs more on it overrides ``sa`` and asks for this one::

    @pytest.fixture
    def sa(sa: XnatStandin) -> XnatStandin:
        add_projects(sa, "P1")
        return sa
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.xnat_helpers import running_standin
from tests.xnat_standin import XnatStandin


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
