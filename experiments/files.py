"""Files that are never seen half-written, locks, and reads that say which file was bad.

Every writer goes through ``atomic_writer``: a unique temporary name beside the target (so two
writers of one path never share a temporary file), fsync, then rename. The file gets the
permissions an ordinary new file would (0666 minus the umask), not mkstemp's 0600, so a sweep
directory shared by a group stays readable by it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _file_mode() -> int:
    # Read once, at import, while no other thread exists: os.umask both reads and sets it.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_writer(p) as f: f.write(...)``: ``p`` appears whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=str) + "\n").encode())


class LocksUnsupported(OSError):
    """The filesystem refuses flock (some cluster filesystems): nothing can be held safely."""


def try_flock(f: IO, exclusive: bool = True) -> bool:
    """Take the lock without waiting: True if taken, False if another process holds it.
    Any other failure is not "held by another process": it raises, saying so."""
    try:
        fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise LocksUnsupported(
            e.errno,
            f"cannot lock {getattr(f, 'name', f)} ({os.strerror(e.errno or 0)}); this "
            "filesystem does not support flock: put the runs or the cache on one that does",
        ) from None


@contextlib.contextmanager
def exclusive_lock(path: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold ``path`` locked for the block, waiting for another holder (saying ``waiting``
    once, if given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        if not try_flock(f):
            if waiting:
                print(waiting, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def read_json(path: Path) -> dict | None:
    """A JSON file's object; None when it is missing or unreadable (half-written by a process
    that died before the atomic writers existed, or edited by hand)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
