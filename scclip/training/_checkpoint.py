"""Training checkpoints without pickle: tensors in ``.safetensors``, everything else in JSON, written atomically.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` (model, optimizer and RNG tensors) and ``NAME.json``
(step, epoch, optimizer hyper-parameters, RNG state of numpy, configs, history). The JSON metadata are also
stored in the safetensors header, so one atomic rename commits a checkpoint: a kill at any moment leaves the
previous or the new checkpoint, never a mix. (Older checkpoints without that header: both files carry the
same random ``token`` and a pair whose tokens differ is refused with a clear message.)
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from scclip.errors import ScclipError
from scclip.io import atomic_write, json_default, write_json_atomic


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into named tensors and JSON-safe metadata."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path_stem: str | Path, *, model, optimizer, meta: dict) -> None:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {**meta, "optimizer": opt_meta, "token": token}
    # The metadata travel inside the .safetensors too, so that this one atomic rename commits the checkpoint;
    # the .json beside it is a readable copy (stale only if killed between the two renames).
    header = {"token": token, "meta": json.dumps(meta, default=json_default)}
    atomic_write(stem.with_suffix(".safetensors"), lambda p: save_file(tensors, str(p), metadata=header))
    write_json_atomic(stem.with_suffix(".json"), meta)


def load_checkpoint(path_stem: str | Path, *, model, optimizer=None) -> dict:
    """Restore model (and optimizer, RNG) from ``<stem>.*``; returns the JSON metadata."""
    stem = Path(path_stem)
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not st.is_file() or not js.is_file():
        msg = f"no training checkpoint at {stem} (expected {st.name} and {js.name}); train without --resume first"
        raise ScclipError(msg)
    try:
        meta = json.loads(js.read_text())
        tensors = load_file(str(st))
    except Exception as err:  # corrupt file: say which and how to recover
        msg = f"training checkpoint {stem} is unreadable ({err}); delete it or resume from best.* instead"
        raise ScclipError(msg) from None
    from safetensors import safe_open

    with safe_open(str(st), framework="pt") as f:
        header = f.metadata() or {}
    token = header.get("token")
    if "meta" in header:  # authoritative copy written in the same atomic rename as the tensors
        meta = json.loads(header["meta"])
    elif token != meta.get("token"):
        msg = (
            f"training checkpoint {stem}: tensors and metadata come from different saves (interrupted write)"
        )
        raise ScclipError(msg)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state)
    if optimizer is not None:
        optimizer_from_flat(optimizer, tensors, meta["optimizer"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta
