"""Run the fault drills and write a report: ``python -m faults`` (or ``python faults/run.py``).

    python -m faults                         all drills, full durations (about 20 min on
                                             2 cores), report in faults/results/<date>.md
    python -m faults --profile ci            the short CI durations
    python -m faults model-faults api-fuzz   some drills
    python -m faults --list                  the drills

PostgreSQL comes from ``TEST_DATABASE_URL`` (default postgres@127.0.0.1:5432/test, as
for the tests). ``--pg-restart`` says whether the PostgreSQL drill may restart the real
server (root and ``pg_ctlcluster`` needed): ``auto`` (the default for the full profile)
waits up to a minute for other clients to leave and otherwise only cuts off the drill's
own database; ``always``; ``never`` (the default for ``ci``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python faults/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faults import report
from faults.db import Template
from faults.drills import (
    DRILLS,
    PROFILES,
    DrillResult,
    RunContext,
    known,
    run_drill,
    start_model_server,
)
from testkit.procs import Processes

RESULTS = Path(__file__).resolve().parent / "results"


async def run(
    names: list[str], profile_name: str, pg_restart: str, workdir: Path
) -> tuple[RunContext, list[DrillResult]]:
    profile = PROFILES[profile_name]
    procs = Processes()
    template = Template()
    results: list[DrillResult] = []
    try:
        await template.create()
        model = await start_model_server(workdir, procs)
        ctx = RunContext(profile, template, model.url, workdir, pg_restart)
        for name in names:
            print(f"--- {name}: {DRILLS[name][0]}", flush=True)
            result = await run_drill(ctx, name)
            results.append(result)
            print(result.summary(), flush=True)
            if not model.alive:
                raise RuntimeError("the model server died; see " + str(model.log))
    finally:
        procs.close()
        with contextlib.suppress(Exception):
            await template.close()
    return ctx, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("drills", nargs="*", help="drills to run (default: all)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--pg-restart", choices=("auto", "always", "never"), default=None)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where reports go")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where service logs and webhook logs go (default: a temp dir)",
    )
    parser.add_argument("--tag", default="", help="added to the report's file name")
    parser.add_argument("--list", action="store_true", help="list the drills and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (title, _fn) in DRILLS.items():
            print(f"{name:<20} {title}")
        return 0
    names = known(args.drills or list(DRILLS))
    pg_restart = args.pg_restart or ("auto" if args.profile == "full" else "never")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="faults-"))
    print(f"logs in {workdir}", flush=True)

    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so every finally block runs.
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    info = report.machine()
    ctx, results = asyncio.run(run(names, args.profile, pg_restart, workdir))
    seconds = time.monotonic() - started
    md, js = report.write(args.results, info, ctx.profile, results, seconds, args.tag)
    passed = sum(r.passed for r in results)
    print(f"{passed}/{len(results)} drills passed in {seconds:.0f} s; report: {md} ({js.name})")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
