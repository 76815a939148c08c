"""A paced, open-loop HTTP load generator: a fixed request rate, whatever the server does.

wrk (closed loop) measures how fast the server can go; it cannot hold a fixed rate
(wrk2 can, but is not packaged in Debian). This module can: each of ``processes``
worker processes sends its share of the requests at precomputed instants
``start + i / rate`` and never waits for an answer before sending the next one, opening
another keep-alive connection whenever none is idle. Latency is measured from the
*scheduled* instant, so a server (or client) that falls behind shows up in the numbers
instead of silently lowering the rate (no coordinated omission); the time from the
actual write is kept too, and so is how late each request left.

The HTTP/1.1 client is a few dozen lines over asyncio streams, not httpx: on a two-core
machine the load generator shares the CPU with the server and PostgreSQL, and this one
costs a fraction of what a full client does. It handles what uvicorn sends back:
Content-Length or chunked bodies, keep-alive, ``Connection: close``.

Import-light on purpose: each worker is ``python -m bench.loadgen`` and imports only this.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: (scheduled, sent, done) in time.monotonic() seconds, then the status (0: no answer).
Record = tuple[float, float, float, int]


@dataclass(frozen=True)
class PacedPlan:
    host: str
    port: int
    request: bytes
    rate: float
    duration: float
    processes: int
    start_at: float
    timeout: float = 10.0
    max_connections: int = 256


def http_request(
    method: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        """Write one request, read its whole response; the status code."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.strip().lower()] = value.strip().lower()
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if headers.get(b"connection") == b"close":
            self.close()
        return status

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()


#: Reuse an idle connection only this long (below the server's keep-alive timeout).
KEEP_ALIVE_SECONDS = 2.0


async def _paced(plan: PacedPlan, index: int) -> list[Record]:
    total = int(plan.rate * plan.duration)
    mine = range(index, total, plan.processes)
    idle: list[Connection] = []
    opened = 0
    records: list[Record] = []
    slots = asyncio.Semaphore(plan.max_connections)

    async def one(scheduled: float) -> None:
        nonlocal opened
        async with slots:
            sent = time.monotonic()
            status = 0
            conn = idle.pop() if idle else None
            # A connection idle longer than the server's keep-alive (uvicorn: 5 s) may be
            # closed under our write: a client artefact, not a server error.
            # Idle ones are in order of last use, so the rest are older still.
            if conn is not None and sent - conn.last_used > KEEP_ALIVE_SECONDS:
                for stale in (conn, *idle):
                    stale.close()
                idle.clear()
                conn = None
            try:
                if conn is None:
                    conn = await Connection.open(plan.host, plan.port)
                    opened += 1
                status = await asyncio.wait_for(conn.send(plan.request), plan.timeout)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                if conn is not None:
                    conn.close()
                conn = None
            done = time.monotonic()
            records.append((scheduled, sent, done, status))
            if conn is not None and not conn.closed:
                conn.last_used = done
                idle.append(conn)

    tasks = []
    for i in mine:
        scheduled = plan.start_at + i / plan.rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return records


def _run_loop(plan: PacedPlan, index: int) -> list[Record]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_paced(plan, index))
    return uvloop.run(_paced(plan, index))


def _worker_main() -> None:
    """``python -m bench.loadgen``: read a pickled (plan, index) on stdin, say "ready", wait
    for the start instant on stdin, then run and write the pickled records to stdout."""
    plan, index = pickle.load(sys.stdin.buffer)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    start_at = float(sys.stdin.buffer.readline())
    records = _run_loop(dataclasses.replace(plan, start_at=start_at), index)
    sys.stdout.buffer.write(pickle.dumps(records))
    sys.stdout.flush()


def run_paced(plan_args: dict[str, Any], lead_seconds: float = 0.5) -> list[Record]:
    """Run the plan over ``processes`` worker processes; every request's record.

    The workers are plain subprocesses of this small module (nothing else to import),
    started first; the schedule begins ``lead_seconds`` after all of them are ready.
    """
    processes = int(plan_args["processes"])
    plan = PacedPlan(start_at=0.0, **plan_args)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    try:
        for index, proc in enumerate(workers):
            assert proc.stdin is not None
            pickle.dump((plan, index), proc.stdin)
            proc.stdin.flush()
        for proc in workers:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("a load generator worker failed to start")
        start_at = time.monotonic() + lead_seconds
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_at!r}\n".encode())
            proc.stdin.close()
        records: list[Record] = []
        for index, proc in enumerate(workers):
            assert proc.stdout is not None
            data = proc.stdout.read()
            if proc.wait() != 0:
                raise RuntimeError(f"load generator worker {index} exited with {proc.returncode}")
            records += pickle.loads(data)
        return records
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


if __name__ == "__main__":
    _worker_main()
