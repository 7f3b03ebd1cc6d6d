"""Files: atomic writes, the cache folder and the output lock, in one place.

Every file ctxenc writes for keeps (records, checkpoints, snapshots, caches) goes through
`atomic_write`: the bytes go to a temporary file beside the target, are flushed to disk, and
only then renamed over it, so a kill or a full disk leaves either the new file or the old one,
never a torn one. A full disk becomes one sentence naming the folder.

Caches (derived data) are written with `save_verified`, which adds a small sidecar
`<name>.check.json` (size and a checksum of the first and last MiB); `load_verified` checks it
before reading, so an entry a full disk or an interrupted copy truncated is rebuilt, with a
one-line warning, instead of failing deep inside numpy or torch.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from ctxenc.errors import UserError


def cache_root() -> Path:
    """Where derived data (decoded images, generated scenes) is cached: $CTXENC_CACHE, else ~/.cache/ctxenc."""
    return Path(os.environ.get("CTXENC_CACHE") or Path.home() / ".cache" / "ctxenc")


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it to `path`.

    The file gets the mode any other tool's output gets (0666 less the umask), not mkstemp's
    private 0600, so collaborators can read the results. On any failure the temporary file is
    removed and `path` keeps its previous content; a full disk (ENOSPC) is a `UserError` naming
    the folder and the free space left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        written = Path(tmp).stat().st_size if Path(tmp).exists() else 0
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path, written, at_least=True) from None
        raise
    return path


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_disk_full(err: BaseException | None) -> bool:
    """ENOSPC or EDQUOT, also behind another exception: torch.save turns a failed write into a RuntimeError."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def disk_full_error(path: Path, needed: int, at_least: bool = False) -> UserError:
    """The one sentence for a full disk (or quota) met while writing `path`: the folder, the space needed and free."""
    free = shutil.disk_usage(path.parent).free
    need = f"{'at least ' if at_least else ''}{human_bytes(needed)} needed"
    return UserError(f"the disk holding {path.parent} is full while writing {path.name} ({need}, {human_bytes(free)} free); "
                     "free some space and run the same command again: the previous file is intact.")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def check_writable_folder(out: Path, flag: str = "--out") -> None:
    """`out` must be a folder, or not exist yet under a folder that can be written: checked before any work."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file; name a folder (it is created if missing).")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise UserError(f"{flag} {out} lies under {parent}, which is a file; name a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: cannot write in {parent}; name a folder you can write to.")


CHECK_BYTES = 2**20  # the checksum covers the first and the last MiB: cheap on multi-GB caches


def file_check(path: Path) -> dict[str, int]:
    """{"bytes": size, "crc32": crc32 of the first and last MiB}: what a cache entry is verified by."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        crc = zlib.crc32(f.read(CHECK_BYTES))
        if size > CHECK_BYTES:
            f.seek(max(CHECK_BYTES, size - CHECK_BYTES))
            crc = zlib.crc32(f.read(), crc)
    return {"bytes": size, "crc32": crc}


def _check_path(path: Path) -> Path:
    return path.with_name(path.name + ".check.json")


def write_check(path: str | os.PathLike) -> None:
    """Write `path`'s sidecar `<name>.check.json` (after `path` itself is complete)."""
    path = Path(path)
    atomic_write_text(_check_path(path), json.dumps(file_check(path)) + "\n")


def check_problem(path: str | os.PathLike) -> str | None:
    """Why `path` does not match its sidecar (missing, size, checksum), or None when it does."""
    path, check = Path(path), _check_path(Path(path))
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        expected = json.loads(check.read_text())
        expected = {"bytes": int(expected["bytes"]), "crc32": int(expected["crc32"])}
    except FileNotFoundError:
        return f"{check.name} is missing"
    except (OSError, ValueError, TypeError, KeyError):
        return f"{check.name} is damaged"
    found = file_check(path)
    if found["bytes"] != expected["bytes"]:
        return f"{path.name} holds {found['bytes']} bytes, expected {expected['bytes']}"
    if found["crc32"] != expected["crc32"]:
        return f"{path.name} has another checksum than when it was written"
    return None


def warn(message: str) -> None:
    """One line on stderr, beside the CLI's errors: for problems ctxenc repairs itself."""
    print(f"ctxenc: warning: {message}", file=sys.stderr, flush=True)


def save_verified(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True) -> Path:
    """`atomic_write` plus the sidecar `load_verified` checks: for caches (derived data)."""
    path = atomic_write(path, write, binary)
    write_check(path)
    return path


def load_verified(path: str | os.PathLike, loader: Callable[[Path], Any], what: str = "cache entry") -> Any | None:
    """`loader(path)` when `path` matches its sidecar and loads; else None, so the caller rebuilds it.

    A missing file is simply None; a damaged one (truncated by a full disk or an interrupted
    copy, or failing to load) is removed with a one-line warning.
    """
    path = Path(path)
    if not path.exists():
        return None
    problem = check_problem(path)
    if problem is None:
        try:
            return loader(path)
        except Exception as err:  # derived data: any failure to read it means rebuild it
            problem = f"it does not load ({type(err).__name__})"
    warn(f"the {what} {path} is damaged ({problem}); rebuilding it.")
    path.unlink(missing_ok=True)
    _check_path(path).unlink(missing_ok=True)
    return None


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


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `path`.lock while the block runs, so that concurrent jobs'
    read-modify-write of `path` (e.g. appending records) never interleave. Blocks until free."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
