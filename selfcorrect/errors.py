"""User-facing errors: one clear line and a non-zero exit, no traceback unless --debug."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake in the user's input (recipe, dataset, paths). Printed as one line, exit code 2."""


def run_cli(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """Run ``main(argv)``; turn a UserError (or a missing file) into one stderr line and exit 2.

    ``--debug`` anywhere on the command line (or SELFCORRECT_DEBUG=1) re-raises with the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SELFCORRECT_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    try:
        main(argv)
    except (UserError, FileNotFoundError) as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
