"""Canonical records and one adapter per public data set."""
