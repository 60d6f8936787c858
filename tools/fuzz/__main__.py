"""``python -m tools.fuzz --cases N --seed S``: run a campaign, print the summary table by target and
outcome and every non-clean case; exit status 1 if there is one."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from tools.fuzz.campaign import TARGETS, failures, run_campaign, summary_table
    from tools.fuzz.runner import Limits

    p = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__)
    p.add_argument("--cases", type=int, default=200, help="number of cases (default 200)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--case", type=int, help="run only this case index (replay)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="children at a time")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    p.add_argument("--memory", type=int, default=2048, help="MiB a child may allocate (default 2048)")
    p.add_argument("--targets", help=f"comma-separated subset of: {', '.join(TARGETS)}")
    p.add_argument("--keep", type=Path, help="copy the inputs of non-clean cases into this directory")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case's outcome")
    args = p.parse_args(argv)
    targets = tuple(args.targets.split(",")) if args.targets else None
    if targets and not set(targets) <= set(TARGETS):
        p.error(f"unknown target(s) {sorted(set(targets) - set(TARGETS))}; known: {', '.join(TARGETS)}")

    began = time.monotonic()

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{total} cases", end="", file=sys.stderr, flush=True)

    results = run_campaign(args.cases, args.seed, limits=Limits(args.memory << 20, args.timeout),
                           jobs=args.jobs, targets=targets, only=args.case, keep=args.keep, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"compress fuzz: {len(results)} cases, seed {args.seed}, {args.jobs} job(s), limits "
          f"{args.memory} MiB / {args.timeout:.0f} s per case, {time.monotonic() - began:.0f} s")
    print(summary_table(results), end="")
    bad = failures(results)
    for r in results if args.verbose else bad:
        print(f"case {r.index} [{r.target}] {r.mutation}: {r.outcome}: {r.detail[:300]} ({r.seconds:.1f} s)")
    print(f"{len(bad)} non-clean outcome(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
