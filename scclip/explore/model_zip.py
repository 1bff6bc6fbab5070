"""Safety checks for zipped model (release) folders before extracting them."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from scclip.errors import ScclipError
from scclip.explore.constants import MODEL_ZIP_MAX_BYTES, MODEL_ZIP_SUFFIXES


def safe_extract_model_zip(
    zip_path: str | Path, dest: str | Path, *, max_bytes: int = MODEL_ZIP_MAX_BYTES
) -> Path:
    """Extract a zipped release folder after checking every member; returns the folder with ``config.json``.

    Refused (``ScclipError`` naming the member): absolute paths or ``..`` (path escape), symbolic links,
    files other than ``.json``, ``.safetensors``, ``.tsv.gz``, ``.md``, more than ``max_bytes`` uncompressed,
    no or several ``config.json``.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ScclipError(f"not a readable .zip file ({err})") from None
    with zf:
        infos = zf.infolist()
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
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info in infos:
            pure = PurePosixPath(info.filename.replace("\\", "/"))
            if (
                info.is_dir()
                or not pure.name.lower().endswith(MODEL_ZIP_SUFFIXES)
                or pure.name.startswith("._")
            ):
                continue
            target = (root / pure).resolve()
            if root not in target.parents:
                raise ScclipError(f"refused: {info.filename!r} escapes the model folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    return root / configs[0]
