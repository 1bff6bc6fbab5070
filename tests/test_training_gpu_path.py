"""The GPU code path, exercised on CPU: device resolution, pinned non-blocking copies, autocast, compile."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scclip.model.patch as patch_mod
from scclip.errors import ScclipError
from scclip.model import autocast, encode_csr, resolve_device
from scclip.model.patch import SparseBatch, uses_pinned_memory
from scclip.training import TrainConfig, fit, wrap_model

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import N_CELLS, _data, _model

REPO = Path(__file__).resolve().parents[1]


def test_no_hard_coded_cuda_calls():
    offenders = [
        f"{p.relative_to(REPO)}:{i}"
        for p in [*REPO.joinpath("scclip").rglob("*.py"), *REPO.joinpath("benchmarks").glob("*.py")]
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\.cuda\(\s*\)", line.split("#")[0])
    ]
    assert offenders == []


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ScclipError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)  # torchrun: this process's GPU


def test_host_to_accelerator_copies_are_pinned_and_non_blocking(monkeypatch):
    """The CUDA branch of SparseBatch.to, run against the meta device."""
    X = sp.random(5, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
    assert uses_pinned_memory("cuda") and uses_pinned_memory(torch.device("cuda", 1))
    assert not uses_pinned_memory("cpu")
    cpu = SparseBatch.from_csr(X)
    assert cpu.to("cpu") is cpu  # no copies on CPU
    pinned, calls = [], []
    real_to = torch.Tensor.to
    monkeypatch.setattr(patch_mod, "uses_pinned_memory", lambda d: torch.device(d).type == "meta")
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t)

    def recording_to(t, *args, **kw):
        calls.append(kw.get("non_blocking", False))
        return real_to(t, *args, **kw)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    moved = SparseBatch.from_csr(X, device="meta")
    assert moved.values.device.type == "meta" and moved.n_cells == 5
    assert len(pinned) == 3 and calls == [True, True, True]


def test_autocast_off_on_cpu_unless_asked():
    with autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(torch.device("cpu"), bf16=True):
        assert torch.is_autocast_enabled("cpu")
    rna, _ = _data()
    model = _model()
    fp32 = encode_csr(model, "rna", rna)
    bf16 = encode_csr(model, "rna", rna, bf16=True)
    assert fp32.dtype == bf16.dtype == np.float32
    assert np.abs(fp32 - bf16).max() < 0.05


def test_compile_flag_keeps_state_dict_keys_and_outputs(monkeypatch):
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="eager"))  # fast tracing
    _, atac = _data()
    plain, compiled = _model(), _model()
    keys = list(plain.state_dict())
    wrap_model(compiled, TrainConfig(compile=True))
    assert list(compiled.state_dict()) == keys
    assert all(b._compiled_call_impl is not None for e in compiled.encoders.values() for b in e.blocks)
    np.testing.assert_allclose(encode_csr(compiled, "atac", atac), encode_csr(plain, "atac", atac), atol=1e-5)
    assert TrainConfig.from_dict(TrainConfig(compile=True).to_dict()).compile


@pytest.mark.slow
def test_compiled_fit_trains_like_eager(tmp_path):
    """Inductor on CPU (needs a C++ compiler; ~30 s)."""
    rna, atac = _data()
    kw = dict(train_idx=np.arange(28), val_idx=np.arange(28, N_CELLS))
    eager = fit(_model(), rna, atac, cfg=TrainConfig(epochs=2, batch_size=16), out_dir=tmp_path / "e", **kw)
    comp = fit(
        _model(),
        rna,
        atac,
        cfg=TrainConfig(epochs=2, batch_size=16, compile=True),
        out_dir=tmp_path / "c",
        **kw,
    )
    for a, b in zip(eager["history"], comp["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
