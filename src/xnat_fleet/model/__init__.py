"""The fleet model: a study loaded from an Ansible inventory and validated into pydantic models."""

from xnat_fleet.model.fleet import Fleet, Host, Problem
from xnat_fleet.model.loader import InventorySource, load_fleet, validate_inventory

__all__ = ["Fleet", "Host", "InventorySource", "Problem", "load_fleet", "validate_inventory"]
