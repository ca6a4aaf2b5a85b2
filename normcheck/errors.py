"""Errors a user can cause, shared by the command line, the config file and the Python API."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake the user can fix: one line; the command line exits 2 on it."""
