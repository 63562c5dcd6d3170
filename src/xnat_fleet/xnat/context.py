"""What a reconciler gets: the desired state, a client, and how to reach other hosts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from xnat_fleet.xnat.client import XnatClient
from xnat_fleet.xnat.desired import DesiredXnat

T = TypeVar("T")


@dataclass
class HostContext:
    """One host's reconciliation.

    ``client`` talks to this host's XNAT as the service account. ``fresh`` is True while the
    site is uninitialised (nothing can be read; reconcilers plan against XNAT's defaults, see
    :meth:`read`). ``peers`` gives clients for other hosts of the study (Xsync pairing needs the
    central host's, logged in as its service account) and their desired states.
    """

    desired: DesiredXnat
    client: XnatClient
    fresh: bool = False
    prune: bool = False
    peers: dict[str, tuple[DesiredXnat, Callable[[], XnatClient]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.desired.host

    def read(self, reader: Callable[[], T], *, fresh: T) -> T:
        """``reader()``'s result, or ``fresh`` (the empty site's value) without any request when
        the site is not initialised yet."""
        if self.fresh:
            return fresh
        return reader()

    def peer(self, host: str) -> tuple[DesiredXnat, XnatClient]:
        desired, connect = self.peers[host]
        return desired, connect()
