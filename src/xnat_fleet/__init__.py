"""xnat-fleet."""
