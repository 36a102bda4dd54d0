"""The project's exception types. How a command prints them (one line, an exit code) is selfcorrect/cli.py."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (recipe, dataset, paths). Printed as one line, exit code 2."""


class NothingToDo(Exception):
    """The run asked for is already complete in its output folder: the message says so, exit code 0."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM in a command that knows how to resume; the message says how."""
