"""One writer per workdir: a lock file holding the writer's pid, host, mode and start time.

    with workdir_lock(workdir, "train"):      # launch.py train / sweep / demo: WORKDIR/.lock
        ...
    with workdir_lock(workdir / "review", "review"):   # the review server: WORKDIR/review/.lock

A second writer exits at once with `WorkdirLockedError`, naming the pid, host, mode and start time
of the holder. The lock is an exclusive `fcntl.flock` on the file (released by the kernel when the
holder dies, however it dies) plus its contents: when the flock is free but the file names a live
process on this host (a file system without flock) the lock is refused too; when it names a dead
process on this host the lock is stale and is taken over (said on stdout). A lock naming another
host whose flock is free is taken over with a warning (the holder cannot be checked from here).
The file is removed on release.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from cervix_jax.train.errors import RunRefused

LOCK_NAME = ".lock"


class WorkdirLockedError(RunRefused, RuntimeError):
    """Another process holds the workdir's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def _holder(text: str) -> dict:
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "another process (the lock file is being written)"
    return (f"`{info.get('mode', '?')}` (pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
            f"since {info.get('started', '?')})")


@contextlib.contextmanager
def workdir_lock(directory, mode: str):
    """Holds `directory/.lock` for the duration of the block (see the module doc)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise WorkdirLockedError(
                f"{directory} is in use by {_describe(info)}: one writer at a time. Wait for it to "
                f"finish or stop it, or use another workdir.") from None
        try:   # the holder may have removed the file between our open and our flock: then retry
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        host, me = socket.gethostname(), os.getpid()
        if info.get("pid") not in (None, me):
            if info.get("host") == host and _alive(int(info["pid"])):
                raise WorkdirLockedError(
                    f"{directory} is in use by {_describe(info)} (the file system does not support "
                    f"flock, but that process is alive): one writer at a time. Wait for it or stop it.")
            why = ("its process is gone" if info.get("host") == host
                   else "it is from another host and its flock is free")
            print(f"taking over the stale lock {path} of {_describe(info)}: {why}", flush=True)
        record = {"pid": me, "host": host, "mode": mode,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        try:
            yield record
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)   # releases the flock
