"""Run every benchmark in turn: ``python -m bench --scale quick`` (or ``full``).

Each one runs in its own process and prints its tables; see bench/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.common import ROOT

BENCHMARKS = ("fetch", "rebuild", "resume", "runtime", "verify")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", default="quick", choices=("quick", "full"))
    parser.add_argument("only", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"\n## python -m bench.{name} --scale {args.scale}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}", "--scale", args.scale],
                             cwd=ROOT)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
