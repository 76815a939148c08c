"""Each attempt's scratch directory, and the start-up sweep of those a killed worker left.

An attempt downloads and decodes into a directory of its own, ``job-<id8>-<random>``,
inside ``<WORK_DIR>/transcriber-jobs`` (WORK_DIR unset: the system's temporary
directory). A worker killed outright (SIGKILL, the OOM killer) cannot remove it, and an
emptyDir outlives the container's restarts, so a crash loop would fill the disk:
:func:`remove_stale`, run when a transcriber starts, removes those directories.

Which ones are stale: an attempt holds an exclusive ``flock`` on its directory for as long
as it runs, and the kernel drops that lock when the process ends, however it ends. A
directory whose lock can be taken belongs to nobody; one that is locked belongs to a
running attempt, of this process or of another transcriber sharing the work dir (two
local replicas on one temporary directory; in Knative each pod has its own emptyDir). The
sweep looks at ``job-*`` directories in ``transcriber-jobs`` only, so nothing else in
WORK_DIR is ever removed. Needs a file system with ``flock`` (any local one).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transcription_core.settings import work_root

#: The subdirectory of WORK_DIR that holds the attempts' directories, and only those.
JOBS_SUBDIR = "transcriber-jobs"
PREFIX = "job-"


def jobs_root(work_dir: str) -> Path:
    """Where attempts' directories go, for the WORK_DIR setting ``work_dir``."""
    return work_root(work_dir) / JOBS_SUBDIR


@contextmanager
def attempt_dir(root: Path, job_id: str) -> Iterator[Path]:
    """A new directory in ``root`` for one attempt at ``job_id``, locked while in use and
    removed at the end."""
    root.mkdir(parents=True, exist_ok=True)
    path, fd = _locked_new_dir(root, f"{PREFIX}{job_id[:8]}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def remove_stale(root: Path) -> list[str]:
    """Remove the attempts' directories in ``root`` that no running attempt holds; return
    their names."""
    removed: list[str] = []
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # not a directory, a symbolic link, or already gone
            continue
        try:
            if _try_lock(fd):  # held while removing, so an attempt cannot start in it
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        finally:
            os.close(fd)
    return removed


def _locked_new_dir(root: Path, prefix: str) -> tuple[Path, int]:
    while True:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        # A sweep may find the directory between mkdtemp and the lock and remove it: then
        # the lock is refused, or taken on a directory no longer there. Make another.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        if _try_lock(fd) and _same_dir(path, fd):
            return path, fd
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_dir(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
