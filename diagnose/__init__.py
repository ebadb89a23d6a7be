"""diagnose: find out why a model update made serving latency jump."""

__version__ = "0.1.0"
