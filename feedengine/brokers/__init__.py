"""Brokers: one sub-package per broker, each with everything that knows its wire."""
