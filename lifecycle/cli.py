"""What every stage script shares: its path arguments, its one-line log, its exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable

from lifecycle.errors import ParamsError, StageError

log = logging.getLogger("lifecycle")


def paths(description: str, **flags: str) -> argparse.Namespace:
    """Parse `--name path` arguments; dvc.yaml is the one place where paths are written."""
    parser = argparse.ArgumentParser(description=description)
    for name, help_text in flags.items():
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, help=help_text)
    return parser.parse_args()


def run(stage: str, main: Callable[[], str]) -> None:
    """Run a stage's main(); print its summary line, or one error line and exit non-zero."""
    logging.basicConfig(level=logging.INFO, format=f"{stage}: %(message)s", stream=sys.stderr)
    start = time.perf_counter()
    try:
        summary = main()
    except ParamsError as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except StageError as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as exc:  # an input a previous stage should have written
        print(f"{stage}: error: input not found: {exc.filename or exc} "
              "(run the stages before this one: dvc repro)", file=sys.stderr)
        sys.exit(1)
    print(f"{stage}: {summary} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
