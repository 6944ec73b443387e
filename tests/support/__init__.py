"""Helpers for tests that run real processes (mosquitto, simulators, agent, collector)."""
