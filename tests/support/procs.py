"""Test-side names for the process helpers that live in ``meterlink.procs``/``meterlink.broker``."""

from meterlink.broker import Mosquitto
from meterlink.procs import Proc, free_port, wait_for, wait_port

__all__ = ["Mosquitto", "Proc", "free_port", "wait_for", "wait_port"]
