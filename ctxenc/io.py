"""Files: atomic writes, the cache folder and the output lock, in one place.

Every file ctxenc writes for keeps (records, checkpoints, snapshots, caches) goes through
`atomic_write`: the bytes go to a temporary file beside the target, are flushed to disk, and
only then renamed over it, so a kill or a full disk leaves either the new file or the old one,
never a torn one. A full disk becomes one sentence naming the folder.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable

from ctxenc.errors import UserError


def cache_root() -> Path:
    """Where derived data (decoded images, generated scenes) is cached: $CTXENC_CACHE, else ~/.cache/ctxenc."""
    return Path(os.environ.get("CTXENC_CACHE") or Path.home() / ".cache" / "ctxenc")


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it to `path`.

    On any failure the temporary file is removed and `path` keeps its previous content; a full
    disk (ENOSPC) is a `UserError` naming the folder and the free space left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise UserError(f"the disk holding {path.parent} is full ({free / 2**20:.0f} MiB free) while writing {path.name}; "
                            "free some space and run the same command again: the previous file is intact.") from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


@contextmanager
def output_lock(out: Path, what: str = "ctxenc bench"):
    """Hold `out/.lock` (pid@host) while running; a lock whose process is dead is taken over."""
    lock = out / ".lock"
    me = f"{os.getpid()}@{socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = lock.read_text().strip() if lock.exists() else ""
            if _alive(owner):
                raise UserError(f"another {what} (process {owner}) is writing to {out}; wait for it to finish "
                                "or use another --out.") from None
            lock.unlink(missing_ok=True)  # left by a dead process
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise UserError(f"could not take the lock {lock}; remove it if no {what} is running.")
    try:
        yield
    finally:
        if lock.exists() and lock.read_text().strip() == me:
            lock.unlink()


def _alive(owner: str) -> bool:
    """Whether the process named 'pid@host' is running (on another host: assume it is)."""
    pid, _, host = owner.partition("@")
    if not pid.isdigit():
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
