"""Turning command-line paths (files, folders, globs) into a sorted, de-duplicated list of inputs.

Each input gets a ``key``: the relative path (POSIX, without extension) its outputs are written under.

* a file named directly: its stem (``a/b/cat.jpg`` -> ``cat``);
* a file found in a folder: its path relative to that folder, without extension
  (``photos/`` holding ``x/cat.jpg`` -> ``x/cat``), so the output tree mirrors the input tree;
* a file matched by a glob: its path relative to the glob's fixed leading folder
  (``data/*/*.png`` matching ``data/a/cat.png`` -> ``a/cat``).

When two inputs would get the same key (``cat.jpg`` and ``cat.png``, or same-named files from two
folders), every one of them gets ``<key>-<8 hex digits of the SHA-1 of its resolved path>`` instead, so
keys stay unique and stable from run to run. The list is sorted by key, which fixes the processing order
and the shards of a distributed run.

Files found inside folders are kept only when their extension is an image format Pillow reads; the
others are returned as *ignored* (with the reason) rather than silently dropped. Files named directly or
matched by a glob are always attempted (a broken symbolic link too, with or without ``recursive``:
reading it then reports it). Paths that do not exist and globs that match nothing are returned as
*missing*. A key whose first part is the run folder ``.manifest`` (possible only through a glob that
names hidden folders) gets a leading ``_``, so no output can land among the run-level files.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .images import image_extensions
from .manifest import MANIFEST_DIR

__all__ = ["Discovery", "InputItem", "discover_inputs"]


@dataclass(frozen=True)
class InputItem:
    """One input file and the key (relative output path without extension) its outputs are written under."""

    source: str
    key: str


@dataclass
class Discovery:
    """What ``discover_inputs`` found: items to process, and missing or ignored paths with reasons."""

    items: list[InputItem]
    missing: list[tuple[str, str]]
    ignored: list[tuple[str, str]]


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _walk(folder: Path, recursive: bool, errors: list[tuple[str, str]]) -> Iterable[Path]:
    """Files under ``folder``; folders that cannot be listed are appended to ``errors`` with the reason."""

    def onerror(err: OSError) -> None:
        errors.append((str(err.filename or folder), f"cannot list folder ({err.strerror or err})"))

    if recursive:
        for root, dirs, files in os.walk(folder, onerror=onerror, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                yield Path(root) / name
    else:
        try:
            entries = list(os.scandir(folder))
        except OSError as err:
            onerror(err)
            return
        for entry in entries:
            # A broken symlink is neither file nor folder: kept, so that reading it reports it (as -r does).
            if entry.is_file() or (entry.is_symlink() and not entry.is_dir()):
                yield Path(entry.path)


def _glob_root(pattern: str) -> Path:
    """The longest leading part of ``pattern`` without wildcards (the folder keys are relative to)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _rel_key(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.with_suffix("").as_posix()


def _path_hash(path: str) -> str:
    return hashlib.sha1(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()[:8]


def discover_inputs(
    paths: Sequence[str | os.PathLike],
    *,
    recursive: bool = False,
    limit: int | None = None,
    out_dir: str | os.PathLike | None = None,
) -> Discovery:
    """Expand ``paths`` (files, folders, globs) into sorted unique ``InputItem``s (see the module docstring).

    Args:
        paths: files, folders or glob patterns (``*``, ``?``, ``[...]``; ``**`` with ``recursive``).
        recursive: descend into sub-folders of folder arguments (hidden folders are skipped) and let
            ``**`` in globs match any depth.
        limit: keep only the first ``limit`` items after sorting.
        out_dir: an output folder to leave out when it lies inside an input folder.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit: expected a non-negative number of images, got {limit}")
    exts = image_extensions()
    skip_root = Path(os.path.realpath(out_dir)) if out_dir is not None else None
    found: list[tuple[str, str]] = []  # (source, key)
    missing: list[tuple[str, str]] = []
    ignored: list[tuple[str, str]] = []
    for raw in paths:
        arg = os.fspath(raw)
        path = Path(arg).expanduser()
        if path.is_dir():
            for file in _walk(path, recursive, missing):
                rel = file.relative_to(path)
                if _is_hidden(rel):
                    continue
                if skip_root is not None and Path(os.path.realpath(file)).is_relative_to(skip_root):
                    continue
                if file.suffix.lower() not in exts:
                    ignored.append((str(file), f"not an image file extension ({file.suffix or 'none'})"))
                    continue
                found.append((str(file), _rel_key(file, path)))
        elif path.exists() or path.is_symlink():
            found.append((str(path), path.stem))
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=recursive))
            files = [Path(m) for m in matches if not Path(m).is_dir()]
            if not files:
                missing.append((arg, "the pattern matched no files"))
            root = _glob_root(os.path.expanduser(arg))
            found.extend((str(f), _rel_key(f, root)) for f in files)
        else:
            missing.append((arg, "no such file or directory"))

    found = [(source, "_" + key if key.split("/")[0] == MANIFEST_DIR else key) for source, key in found]
    unique: dict[str, tuple[str, str]] = {}
    for source, key in found:  # the same file named twice is processed once
        unique.setdefault(os.path.realpath(source), (source, key))
    by_key: dict[str, list[tuple[str, str]]] = {}
    for source, key in unique.values():
        by_key.setdefault(key, []).append((source, key))
    items = []
    for key, group in by_key.items():
        if len(group) == 1:
            items.append(InputItem(group[0][0], key))
        else:
            items.extend(InputItem(source, f"{key}-{_path_hash(source)}") for source, _ in group)
    items.sort(key=lambda item: (item.key, item.source))
    if limit is not None:
        items = items[:limit]
    return Discovery(items=items, missing=sorted(missing), ignored=sorted(ignored))
