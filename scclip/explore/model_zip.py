"""Safety checks for zipped model (release) folders before extracting them."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from scclip.errors import ScclipError
from scclip.explore.constants import MODEL_ZIP_MAX_BYTES, MODEL_ZIP_SUFFIXES

MAX_MEMBERS = 1000


def safe_extract_model_zip(
    zip_path: str | Path, dest: str | Path, *, max_bytes: int = MODEL_ZIP_MAX_BYTES, reuse: bool = False
) -> Path:
    """Extract a zipped release folder after checking every member; returns the folder with ``config.json``.

    Refused (``ScclipError`` naming the member): absolute paths or ``..`` (path escape), symbolic links,
    files other than ``.json``, ``.safetensors``, ``.tsv.gz``, ``.md`` (so no pickle such as ``.pt``,
    ``.ckpt``, ``.pkl``, ``.bin``), more than ``max_bytes`` uncompressed or more than ``MAX_MEMBERS`` entries,
    no or several ``config.json``.

    The members are written to a private temporary folder beside ``dest`` and made read-only, then the folder
    is renamed to ``dest`` in one step, so no reader sees a half-extracted model. ``reuse=True`` (``dest``
    named by the zip's content hash) returns an existing ``dest`` as it is, e.g. when another session
    extracted the same zip first.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ScclipError(f"not a readable .zip file ({err})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ScclipError(f"refused: the zip has {len(infos)} entries (a release folder has about 7)")
        total = 0
        configs = []
        for info in infos:
            name = info.filename
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or ".." in pure.parts or (pure.parts and pure.parts[0].endswith(":")):
                raise ScclipError(f"refused: {name!r} would be written outside the model folder")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ScclipError(f"refused: {name!r} is a symbolic link")
            if info.is_dir():
                continue
            if pure.name.startswith("._") or "__MACOSX" in pure.parts or pure.name == ".DS_Store":
                continue
            if not pure.name.lower().endswith(MODEL_ZIP_SUFFIXES):
                raise ScclipError(
                    f"refused: {name!r} is not part of a release folder (allowed: "
                    f"{', '.join(MODEL_ZIP_SUFFIXES)})"
                )
            total += info.file_size
            if total > max_bytes:
                raise ScclipError(f"refused: the zip unpacks to more than {max_bytes / 1e9:.1f} GB")
            if pure.name == "config.json":
                configs.append(pure.parent)
        if len(configs) != 1:
            raise ScclipError(
                "the zip must hold exactly one release folder (one config.json with model.safetensors); "
                f"found {len(configs)} config.json files"
            )
        if reuse and dest.is_dir() and any(dest.rglob("config.json")):
            return dest.resolve() / configs[0]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            _extract(zf, infos, tmp.resolve())
            try:
                os.rename(tmp, dest)
            except OSError:  # dest exists: another session extracted it first (reuse) or a real conflict
                if not (reuse and any(dest.rglob("config.json"))):
                    raise ScclipError(f"cannot extract the model into {dest}: the folder exists") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest.resolve() / configs[0]


def _extract(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], root: Path) -> None:
    """Write the allowed members under ``root`` (checked again after resolving) as read-only files."""
    root.chmod(0o755)
    for info in infos:
        pure = PurePosixPath(info.filename.replace("\\", "/"))
        if info.is_dir() or not pure.name.lower().endswith(MODEL_ZIP_SUFFIXES) or pure.name.startswith("._"):
            continue
        target = (root / pure).resolve()
        if root not in target.parents:
            raise ScclipError(f"refused: {info.filename!r} escapes the model folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        target.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # cached models are read-only
