"""Errors that are the user's input or environment, not a bug: a stage ends them with one line, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a missing or unreachable resource: the message names it and says what to do."""


class InputError(UserError, ValueError):
    """A dataset, file, artifact or setting given to the pipeline that cannot be used as it is (a wrong layout, a
    stale or misaligned artifact, a plan made for other params). A ValueError too, for callers that catch those."""


class StoreError(UserError):
    """The MLflow store cannot be used as DVC's results expect (unreachable, a run deleted, a record missing)."""
