"""kcheck: make Linux hosts ready for CRIU checkpoint/restore of containers."""

__version__ = "0.1.0"
