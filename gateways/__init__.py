"""Gateways for clients without the SDK."""
