"""`python -m lifecycle.monitoring gate RESULTS`: exit 1 when the last monitoring run raised an
alert at `monitor.alerts.fail_on` or worse (for cron and CI: `make monitor` ends with it)."""

from __future__ import annotations

import argparse
import sys

from lifecycle import io, params
from lifecycle.errors import ParamsError
from lifecycle.monitoring.alerts import at_least


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.monitoring")
    sub = parser.add_subparsers(dest="command", required=True)
    gate = sub.add_parser("gate", help="exit 1 if an alert at fail_on or worse fired")
    gate.add_argument("results", help="monitoring/out/results.json")
    args = parser.parse_args(argv)
    try:
        fail_on = params.load("monitor").alerts.fail_on
    except ParamsError as exc:
        print(f"monitor: error: {exc}", file=sys.stderr)
        return 2
    failing = at_least(io.read_json(args.results)["alerts"], fail_on)
    for alert in failing:
        print(f"monitor: {alert['severity'].upper()} {alert['rule']}: {alert['message']}",
              file=sys.stderr)
    if failing:
        print(f"monitor: {len(failing)} alert(s) at {fail_on} or worse", file=sys.stderr)
        return 1
    print("monitor: no alert at " + fail_on + " or worse", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
