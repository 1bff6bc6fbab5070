"""User-facing errors.

Every problem caused by the user's input (a file, an option, a model folder) is raised as
:class:`ScclipError`: the message says what was wrong and how to fix it. The CLI prints such
messages without a traceback; anything else is a bug.
"""

from __future__ import annotations


class ScclipError(ValueError):
    """Bad input: the message says what was wrong and what to run or change."""


class GenomeMismatchError(ScclipError):
    """Query data come from a different genome assembly than the model's feature space."""
