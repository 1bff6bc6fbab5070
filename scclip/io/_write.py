"""Writing files atomically: a temporary file in the same folder, then a rename (never a half-written file)."""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import mudata as md

from scclip.errors import ScclipError


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it onto ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def json_default(o):
    """``json.dumps(default=...)`` for numpy values and paths."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    msg = f"not JSON-serialisable: {type(o).__name__}"
    raise TypeError(msg)


def write_json_atomic(path: str | Path, obj: dict) -> None:
    """Write JSON through a temporary file and a rename (never a half-written file)."""
    atomic_write(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, default=json_default)))


def write_error_message(path: Path, err: OSError) -> str:
    """One line saying why writing ``path`` failed; a full disk (ENOSPC, also inside an HDF5 message) is named."""
    detail = " ".join(str(err).split())  # HDF5 messages can span lines
    if err.errno == errno.ENOSPC or "No space left" in detail or "errno = 28" in detail:
        return (
            f"Could not write {path}: the disk is full (No space left on device). Nothing was written; free "
            "some space or write to another disk."
        )
    return f"Could not write {path} ({detail}): check that the folder is writable and has free space."


def write_h5mu(mdata: md.MuData, path) -> Path:
    """Write ``mdata`` to ``path`` (``.h5mu``) atomically (a temporary file in the same folder, then a rename),
    creating the folder; a failure leaves no partial file. Returns the path."""
    path = Path(path).expanduser()
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.h5mu")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with md.set_options(pull_on_update=False):
            mdata.write_h5mu(tmp)
        os.replace(tmp, path)  # atomic: readers see the old file or the complete new one
    except OSError as err:
        raise ScclipError(write_error_message(path, err)) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path
