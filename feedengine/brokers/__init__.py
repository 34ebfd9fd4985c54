"""Broker packages: each broker's wire, sources and simulated-market encoder."""
