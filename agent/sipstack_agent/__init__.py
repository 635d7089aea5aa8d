"""SIPSTACK Connector for Asterisk: the per-PBX agent."""

__version__ = "0.18.0"
