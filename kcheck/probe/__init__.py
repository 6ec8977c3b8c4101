"""kcheck probe: decide from live evidence whether a kernel is ready for CRIU C/R."""

DEFAULT_TIMEOUT = 10.0  # seconds for each live probe
