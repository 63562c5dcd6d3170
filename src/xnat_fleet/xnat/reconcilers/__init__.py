"""One module per area; each exposes ``plan(ctx) -> list[Change]``."""
