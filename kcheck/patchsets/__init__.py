"""The patchset catalog: upstream fixes kcheck knows how to apply, kept as TOML data."""
