"""XNAT REST stand-in for xnat-fleet tests — NOT XNAT.

An in-memory HTTP server with XNAT's endpoints, status codes and documented quirks
(../shared/design/xnat-facts.md §6-§16), used by the contract tests and the demo.
"""

from .server import STANDIN_NOTICE, XnatStandin
from .state import State

__all__ = ["STANDIN_NOTICE", "State", "XnatStandin"]
