"""SIPSTACK Connector for Asterisk: the Kubernetes operator."""

__version__ = "0.18.0"
