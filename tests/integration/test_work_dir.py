"""The transcriber's work dir: an attempt's directory a killed worker left is removed when
a transcriber starts, and nothing else is: not another file in WORK_DIR, not a directory
a running attempt (of this replica or another one sharing the dir) still holds."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack import running_stack
from testkit.asgi import serve_app
from transcriber_service.app import create_app
from transcriber_service.settings import TranscriberSettings

#: A child process that starts an attempt in WORK_DIR, says where, and waits to be killed.
_ATTEMPT = """
import sys, time
from transcriber_service.workdir import attempt_dir, jobs_root
with attempt_dir(jobs_root(sys.argv[1]), "0123456789abcdef") as path:
    (path / "media").write_bytes(b"x" * 100_000)
    print(path, flush=True)
    time.sleep(600)
"""


@contextmanager
def attempt_in_another_process(work_dir: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    with subprocess.Popen(
        [sys.executable, "-c", _ATTEMPT, str(work_dir)], stdout=subprocess.PIPE, text=True
    ) as child:  # closes its stdout when done
        try:
            assert child.stdout is not None
            yield child, Path(child.stdout.readline().strip())
        finally:
            child.kill()


def settings(pg_url: str, work_dir: Path) -> TranscriberSettings:
    return TranscriberSettings(database_url=pg_url, work_dir=str(work_dir))


def is_locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def test_start_up_removes_what_a_killed_attempt_left_and_nothing_else(
    pg_url: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with attempt_in_another_process(work) as (child, killed):
        assert (killed / "media").is_file()
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert killed.is_dir(), "SIGKILL gives the attempt no chance to clean up"
    jobs = killed.parent
    assert jobs == work / "transcriber-jobs"
    older = jobs / "job-89abcdef-left-before"  # an attempt dir with no lock file in it
    older.mkdir()
    (older / "audio.pcm").write_bytes(b"\0" * 1000)
    unrelated = [work / "job-not-ours", work / "notes.txt", jobs / "not-a-job.txt"]
    unrelated[0].mkdir()
    for path in unrelated[1:]:
        path.write_text("keep me")

    async with serve_app(create_app(settings(pg_url, work))):
        assert not killed.exists()
        assert not older.exists()
        assert all(path.exists() for path in unrelated)


async def test_start_up_keeps_the_directory_of_a_running_attempt(
    pg_url: str, tmp_path: Path
) -> None:
    """Two transcribers sharing one WORK_DIR (two local replicas): one starting up does
    not take the other's running attempt away."""
    with attempt_in_another_process(tmp_path) as (_child, running):
        assert running.parent == tmp_path / "transcriber-jobs"
        async with serve_app(create_app(settings(pg_url, tmp_path))):
            assert (running / "media").is_file()


async def test_a_running_job_holds_its_directory_and_removes_it_at_the_end(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_stack(
        pg_url,
        "http://127.0.0.1:9",
        transcriber={"work_dir": str(tmp_path), "shutdown_grace_seconds": 0.2},
        orchestrator={"retry_backoff_seconds": 3600},
    ) as stack:
        job = await stack.enqueue("jfk.flac", media="stall")  # the download never ends
        await stack.wait_status(job["id"], "PROCESSING")
        (attempt,) = (tmp_path / "transcriber-jobs").glob(f"job-{job['id'][:8]}-*")
        assert is_locked(attempt)
        async with serve_app(create_app(settings(pg_url, tmp_path))):  # another replica
            assert attempt.is_dir()
    assert list((tmp_path / "transcriber-jobs").iterdir()) == []
