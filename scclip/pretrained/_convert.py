"""``scclip convert-checkpoint``: turn a TRUSTED PyTorch checkpoint (pickle) into safetensors + JSON.

scclip itself never unpickles anything: models are release folders (JSON, ``.safetensors``, feature tables,
model card). Some users have ``.pt`` / ``.ckpt`` files from other code; this explicit, opt-in command reads
one with ``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors, containers and plain
values only, no arbitrary objects) and writes

* ``DIR/model.safetensors``: every tensor, nested keys joined by ``.`` (``module.`` prefixes of
  ``DistributedDataParallel`` removed; a top-level ``state_dict`` / ``model`` / ``model_state_dict`` entry
  is used when present);
* ``DIR/checkpoint.json``: the source, the tensor names and shapes, and the checkpoint's other plain values.

With ``like=MODEL`` the result is a complete release folder: ``config.json``, feature tables, summary and card
are copied from the release folder ``MODEL`` (same architecture and feature space) and the weights are
checked against its config (missing, unexpected and wrongly shaped tensors are listed) before the folder
appears.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from scclip.errors import ScclipError

_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net")
_RELEASE_EXTRA = ("config.json", "summary.json", "README.md", "centroids.json")


def _flatten(obj, prefix: str, tensors: dict, other: dict) -> None:
    if torch.is_tensor(obj):
        tensors[prefix] = obj.detach().cpu().contiguous()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors, other)
    elif isinstance(obj, list | tuple) and any(torch.is_tensor(v) for v in obj):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors, other)
    else:
        try:
            json.dumps(obj)
            other[prefix or "value"] = obj
        except TypeError:
            other[prefix or "value"] = repr(obj)


def _state_of(obj) -> tuple[dict, dict]:
    """(tensors, other plain values) of a loaded checkpoint."""
    tensors: dict = {}
    other: dict = {}
    if isinstance(obj, dict):
        key = next((k for k in _STATE_KEYS if isinstance(obj.get(k), dict)), None)
        if key is not None:
            _flatten(obj[key], "", tensors, other)
            rest = {k: v for k, v in obj.items() if k != key and not torch.is_tensor(v)}
            _flatten(rest, "", {}, other)
        else:
            _flatten(obj, "", tensors, other)
    else:
        _flatten(obj, "", tensors, other)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors, other


def convert_checkpoint(path: str | Path, out: str | Path, *, like: str | Path | None = None) -> Path:
    """Convert a trusted PyTorch checkpoint into ``out/model.safetensors`` + ``out/checkpoint.json``.

    Parameters
    ----------
    path
        The ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin`` file; read with ``torch.load(weights_only=True)``.
    out
        A new (or empty) folder; it appears only once complete.
    like
        A release folder (or pretrained name) with the same architecture: its config, feature tables and card
        are copied and the weights are checked against its config, so ``out`` loads with
        :func:`scclip.load_pretrained`. The ATAC idf of ``like`` is kept when the checkpoint has none.

    Returns
    -------
    The output folder.
    """
    path, out = Path(path).expanduser(), Path(out).expanduser()
    if not path.is_file():
        msg = f"{path} does not exist: give the checkpoint file to convert"
        raise ScclipError(msg)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        msg = f"--out {out} exists and is not an empty folder; choose a new folder"
        raise ScclipError(msg)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = (
            f"refused to convert {path}: it is not a plain tensor checkpoint readable with "
            f"torch.load(weights_only=True) ({first[:200]}); only tensors, dicts, lists and plain values are "
            "accepted"
        )
        raise ScclipError(msg) from None
    tensors, other = _state_of(obj)
    if not tensors:
        msg = f"{path} holds no tensors: nothing to convert"
        raise ScclipError(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if like is not None:
            _as_release_folder(tensors, tmp, like)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"converted_from": path.name})
        meta = {
            "converted_from": str(path),
            "loader": "torch.load(weights_only=True)",
            "like": None if like is None else str(like),
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
            "metadata": other,
        }
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2))
        if like is not None:
            from scclip.pretrained._release import load_pretrained

            load_pretrained(tmp)  # the folder loads: names and shapes fit config.json
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _as_release_folder(tensors: dict, folder: Path, like) -> None:
    """Copy ``like``'s release files into ``folder`` and check ``tensors`` against its config."""
    from safetensors.torch import load_file

    from scclip.pretrained._release import check_state_dict, load_pretrained, resolve_model_dir

    src = resolve_model_dir(like)
    model = load_pretrained(src)
    for f in src.iterdir():
        if f.name in _RELEASE_EXTRA or f.name.startswith("features_"):
            shutil.copy2(f, folder / f.name)
    idf_key = "preprocess.atac.idf"
    if idf_key not in tensors and idf_key in load_file(str(src / "model.safetensors")):
        tensors[idf_key] = load_file(str(src / "model.safetensors"))[idf_key]
    state = {k: v.float() for k, v in tensors.items() if k != idf_key}
    check_state_dict(model.net, state, where=f"the checkpoint (compared with {src})")
