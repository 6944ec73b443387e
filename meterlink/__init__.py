"""The ``meterlink`` command: one entry point over the agent, collector and simulators."""

__version__ = "0.1.0"
