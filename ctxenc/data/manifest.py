"""An image folder's file list, written once and reused: no stat() per image on every load.

The first read of a folder lists it (every image's path, size and modification time, and its
class subfolders) into the cache folder, `manifests/<sha1 of the folder's path>/`. Later reads
stat only the directories that listing walked (ImageNet: ~1,000 calls instead of 1.28 M) and
compare their inode, mtime and ctime with the recorded ones. Adding, removing or renaming a file
or a folder changes its directory's times, so the folder is listed again, with one line saying so.

Not seen by that check: a file rewritten in place under the same name (its directory does not
change). Tools that replace files (rsync, `mv`, most editors and image tools that save to a new
name and rename it) are seen; after editing files in place, `touch` their folder and the next
read lists it again.

A directory that changed less than `RACY_NS` before the listing began might change again within
the same timestamp tick without its times moving (git's "racy" entries); a listing that saw such a
directory is used once and silently made again on the next read.

The decoded-image cache is keyed by the listing's digest (`Listing.digest`), so a second load
touches no image file at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ctxenc.errors import UserError
from ctxenc.io import atomic_write_text, cache_root

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_NAMES = ("train", "test", "val")  # never classes: they are a dataset's splits
RACY_NS = 2 * 10**9  # FAT's 2 s is the coarsest timestamp a folder may have
VERSION = 1


class Listing:
    """The images of one folder, sorted by class, then by path (part by part, as pathlib sorts).

    classes: the class subfolders' names ((): unlabeled, images side by side); counts: images per
    class ((N,) when unlabeled); digest: sha1 over every (path, size, mtime), what the decoded
    cache is keyed by.
    """

    def __init__(self, folder: Path, store: Path, classes: tuple[str, ...], counts: tuple[int, ...], digest: str):
        self.folder, self.store, self.classes, self.counts, self.digest = folder, store, classes, counts, digest
        self._files: list[Path] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(self.counts)

    def labels(self) -> np.ndarray | None:
        """int64 (N,) class index per image, None when unlabeled."""
        if not self.classes:
            return None
        return np.repeat(np.arange(len(self.classes), dtype=np.int64), self.counts)

    def files(self) -> list[Path]:
        """Every image's path (N,), read from the stored list (only when images are decoded). Thread-safe."""
        with self._lock:
            if self._files is None:
                text = self._stored_text()
                if text is None:  # damaged or removed, or another process listed a changed folder since
                    _write_listing(self.folder, self.store)
                    text = self._stored_text()
                if text is None:
                    raise UserError(f"{self.folder} changed while ctxenc was reading it; run the command again.")
                self._files = [self.folder / rel for rel, _, _ in json.loads(text)]
            return self._files

    def _stored_text(self) -> str | None:
        """files.json when it is the list this listing's digest names, else None."""
        try:
            text = (self.store / "files.json").read_text()
        except OSError:
            return None
        return text if hashlib.sha1(text.encode()).hexdigest() == self.digest else None


def folder_listing(folder: Path) -> Listing:
    """The listing of `folder`: the stored one when its directories are unchanged, else a new one (written)."""
    folder = folder.resolve()
    store = cache_root() / "manifests" / hashlib.sha1(str(folder).encode()).hexdigest()[:20]
    try:
        old = json.loads((store / "listing.json").read_text())
        recorded = old["dirs"] if old.get("version") == VERSION and old.get("folder") == str(folder) else None
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: list the folder
        recorded = None
    if recorded is not None:
        if {rel: _dir_state(folder / rel) for rel in recorded} == recorded:
            if not old["racy"]:
                return Listing(folder, store, tuple(old["classes"]), tuple(old["counts"]), old["digest"])
        else:
            print(f"ctxenc: {folder} changed since it was last listed; listing its images again.", file=sys.stderr, flush=True)
    return _write_listing(folder, store)


def _dir_state(path: Path) -> list[int] | None:
    """[inode, mtime_ns, ctime_ns] of a directory (None if gone): entries added, removed or renamed change them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _write_listing(folder: Path, store: Path) -> Listing:
    started = time.time_ns()
    dirs = {".": _dir_state(folder)}  # recorded before reading, so a change during the walk is seen next time
    loose, subfolders = _images_in(folder, "", follow_links=True)
    loose.sort()
    classes, counts, files = [], [], []
    for name in sorted(subfolders):
        if name.startswith(".") or name in SPLIT_NAMES:
            continue
        found = _walk(folder, name, dirs)
        if found:
            classes.append(name)
            counts.append(len(found))
            files += sorted(found, key=lambda f: f[0].split("/"))  # as Path sorts: part by part
    if loose and classes:
        raise UserError(f"{folder} mixes class subfolders ({classes[0]}/ ...) with loose images ({loose[0][0]} ...); "
                        "move the loose images into a class folder, or into a folder of their own for unlabeled data.")
    if not loose and not classes:
        raise UserError(f"{folder} holds no images ({', '.join(EXTENSIONS)}): expected class subfolders of images, "
                        "or image files directly for unlabeled data.")
    if loose:
        files, counts = loose, [len(loose)]
    text = json.dumps(files, separators=(",", ":"))
    digest = hashlib.sha1(text.encode()).hexdigest()
    racy = any(state is None or max(state[1], state[2]) > started - RACY_NS for state in dirs.values())
    atomic_write_text(store / "files.json", text)
    # listing.json last: it names files.json's digest, so a reader never pairs it with another list.
    atomic_write_text(store / "listing.json", json.dumps({"version": VERSION, "folder": str(folder), "dirs": dirs,
                                                          "classes": classes, "counts": counts, "digest": digest,
                                                          "racy": racy}))
    return Listing(folder, store, tuple(classes), tuple(counts), digest)


def _walk(folder: Path, rel: str, dirs: dict) -> list[list]:
    """The images under `folder/rel` at any depth, recording each directory's state in `dirs`.

    Like torchvision's ImageFolder and pathlib's rglob, symlinked subfolders are not followed.
    """
    dirs[rel] = _dir_state(folder / rel)
    found, subfolders = _images_in(folder / rel, rel + "/", follow_links=False)
    for name in subfolders:
        found += _walk(folder, f"{rel}/{name}", dirs)
    return found


def _images_in(path: Path, prefix: str, follow_links: bool) -> tuple[list[list], list[str]]:
    """([prefix + name, size, mtime_ns] of the image files directly in `path`, names of its subfolders).

    Symlinks to files count as files (as Path.is_file sees them); only images are stat'ed.
    """
    found, subfolders = [], []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir():
                if follow_links or not entry.is_symlink():
                    subfolders.append(entry.name)
                continue
            if entry.name.startswith(".") or not entry.name.lower().endswith(EXTENSIONS):
                continue
            try:
                st = entry.stat()
            except OSError:  # a dangling symlink
                continue
            if stat.S_ISREG(st.st_mode):
                found.append([prefix + entry.name, st.st_size, st.st_mtime_ns])
    return found, subfolders
