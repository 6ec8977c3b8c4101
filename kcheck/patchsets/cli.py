"""`kcheck patchsets`: list, show and validate the catalog."""

from __future__ import annotations


def register(jobs) -> None:
    """Placeholder until the catalog commands land (issue 3)."""
