"""XNAT REST stand-in for xnat-fleet tests — NOT XNAT.

An in-memory HTTP server with XNAT's endpoints, status codes and quirks (as read in XNAT's own
source; docs/xnat-api.md §6-§16 where that sheet holds), used by the contract tests
and the demo. Version-dependent behaviour: ``STANDIN_PROFILES`` / the settings on ``State``.
"""

from .server import STANDIN_NOTICE, XnatStandin
from .state import STANDIN_PROFILES, StandinProfile, State

__all__ = ["STANDIN_NOTICE", "STANDIN_PROFILES", "StandinProfile", "State", "XnatStandin"]
