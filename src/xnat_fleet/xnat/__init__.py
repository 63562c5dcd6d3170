"""XNAT as code: REST client, desired state, reconcilers (plan / apply / drift)."""
