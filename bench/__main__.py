"""The benchmark runner: ``python -m bench NAME [OPTIONS]`` (see bench/__init__.py).

    python -m bench --list             the scenarios and their smoke options
    python -m bench NAME --help        one scenario's options
    python -m bench NAME [OPTIONS]     one scenario
    python -m bench all                what ``make bench`` runs, then update-readme
    python -m bench --smoke [NAME ...] each scenario's smallest run (all of them unless
                                       named), results in bench/results/tmp/smoke/
    python -m bench update-readme      bench/README.md's results table from the newest files

A scenario is a module of ``bench.scenarios`` with ``main(argv)`` and ``SMOKE`` (the
options of its smallest run); it is imported only when it runs. SIGTERM unwinds like
Ctrl-C, so every ``finally`` stops the servers a scenario started and drops its database.
"""

from __future__ import annotations

import importlib
import signal
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

SCENARIOS = {
    "enqueue": "enqueue throughput (wrk) and latency at a fixed rate",
    "pickup": "enqueue → TRIGGERED, LISTEN/NOTIFY",
    "long-media": "a long recording through the service, against faster-whisper",
    "long-media-designs": "chunking designs on the model alone",
    "long-media-eval": "real and synthetic recordings: the service's chunking vs faster-whisper",
    "long-media-concurrency": "four long jobs at once: audio throughput vs faster-whisper",
    "memory": "the transcriber's peak RSS over a job, by media size",
    "transcriber-memory": "the transcriber's decode and chunking, peak RSS by length",
    "model-server-memory": "the model server's peak RSS given a 10-hour FLAC",
    "model-server-batching": "batched decoding against sequential faster-whisper",
    "gpu": "the model server against faster-whisper on a GPU (or the CPU): throughput, memory",
    "webhook-memory": "the transcriber's peak RSS while a receiver answers 1 GiB",
    "sustained": "short clips at a fixed rate through the whole service",
    "model-busy": "the service at twice its model server's capacity",
    "backlog": "claim rounds and drain rate with a deep backlog on a big table",
    "retention": "retention under steady load: the tables stop growing",
    "ceiling": "the highest job rate the pipeline holds, with an instant stand-in model",
    "diarize": "speaker diarization: DER and CPU per audio minute, on known conversations",
}
#: What ``make bench`` runs, in this order.
ALL = [
    ("enqueue", []),
    ("pickup", []),
    ("long-media", []),
    ("long-media-designs", []),
    ("long-media-eval", []),
    ("long-media-concurrency", []),
    ("memory", ["--fresh"]),
    ("model-server-memory", []),
    ("sustained", ["--rate", "sustainable"]),
]
SMOKE_OUT = Path(__file__).resolve().parent / "results" / "tmp" / "smoke"


def scenario(name: str) -> ModuleType:
    if name not in SCENARIOS:
        raise SystemExit(f"no scenario {name!r}; one of: {', '.join(SCENARIOS)}")
    return importlib.import_module(f"bench.scenarios.{name.replace('-', '_')}")


def run(name: str, argv: list[str]) -> int:
    print(f"=== {name} {' '.join(argv)}", flush=True)
    started = time.monotonic()
    code = scenario(name).main(argv) or 0
    print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
    return int(code)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "--list":
        for name, title in SCENARIOS.items():
            print(f"{name:<22} {title}\n{'':<22} smoke: {' '.join(scenario(name).SMOKE)}")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    if argv[0] == "update-readme":
        from bench import readme

        return readme.main(argv[1:])
    if argv[0] == "all":
        for name, options in ALL:
            if code := run(name, options):
                return code
        return main(["update-readme"])
    if argv[0] == "--smoke":
        failed = []
        for name in argv[1:] or list(SCENARIOS):
            options = [*scenario(name).SMOKE, "--out", str(SMOKE_OUT)]
            try:
                code = run(name, options)
            except Exception as exc:  # the next scenario runs; the exit code says it failed
                print(f"=== {name} failed: {type(exc).__name__}: {exc}", flush=True)
                code = 1
            if code:
                failed.append(name)
        print(f"smoke runs failed: {', '.join(failed)}" if failed else "every smoke run passed")
        return 1 if failed else 0
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
