"""Errors of the head-end, split by who must act on them."""

from __future__ import annotations

__all__ = ["CollectorError", "ConfigError", "EnrolError", "RatingError"]


class CollectorError(Exception):
    """Root of the collector's own errors; the CLI prints the message and exits non-zero."""


class ConfigError(CollectorError):
    """A configuration file (collector, tariff, accounts) that is missing or wrong.

    The message names the file, the key and, where it can be found, the line.
    """


class EnrolError(CollectorError):
    """An enrolment that cannot be done as asked (bad key file, bad ids)."""


class RatingError(CollectorError):
    """A bill that cannot be made (unknown account, bad period, missing tariff)."""
