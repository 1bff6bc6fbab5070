"""Distributed data parallel on CPU: 2 gloo processes == 1 process on the global batch.

Workers are spawned with ``torch.multiprocessing`` on 127.0.0.1 (a free port each time), one thread each.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scclip.model import ClipLoss, ModelConfig, ScCLIP
from scclip.model.patch import SparseBatch
from scclip.training import TrainConfig, fit, shard_batches, world_info, wrap_model

N_CELLS, N_RNA, N_ATAC, BATCH = 40, 60, 90, 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _layout(n: int, n_patches: int) -> dict:
    ps = -(-n // n_patches)
    i = np.arange(n)
    return {"patch": i // ps, "offset": i % ps, "n_patches": n_patches, "patch_size": ps}


def _data() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    rna = sp.random(N_CELLS, N_RNA, density=0.2, format="csr", random_state=1, dtype=np.float32)
    atac = sp.random(N_CELLS, N_ATAC, density=0.1, format="csr", random_state=2, dtype=np.float32)
    atac.data[:] = 1.0
    return rna, atac


def _model(dtype: torch.dtype = torch.float32) -> ScCLIP:
    torch.manual_seed(0)
    cfg = ModelConfig(
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
        proj_dim=8,
        n_patches=6,
        feature_dropout=0.0,
        embedding_init="random",
        freeze_embedding=False,
    )
    return ScCLIP(cfg, {"rna": _layout(N_RNA, 6), "atac": _layout(N_ATAC, 6)}).to(dtype)


def _step(model: ScCLIP, rows: np.ndarray, intra: float, cfg: TrainConfig) -> tuple[float, dict]:
    """Loss and parameter gradients of one training step (DDP-wrapped when distributed)."""
    rna, atac = _data()
    net = wrap_model(model, cfg)
    loss = ClipLoss(intra_negatives=intra)(
        *net(SparseBatch.from_csr(rna[rows]), SparseBatch.from_csr(atac[rows]))
    )
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _init(rank: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    from scclip.training import init_distributed

    assert init_distributed() == (rank, 2)


def _grad_worker(rank: int, port: int, out: str) -> None:
    _init(rank, port)
    results = {}
    for intra in (0.0, 1.0):
        rows = shard_batches(np.arange(N_CELLS), epoch=0, seed=0, batch_size=BATCH, rank=rank, world_size=2)[
            0
        ]
        loss, grads = _step(_model(torch.float64), rows, intra, TrainConfig())
        losses = [torch.zeros(1, dtype=torch.float64) for _ in range(2)]
        torch.distributed.all_gather(losses, torch.tensor([loss], dtype=torch.float64))
        results[intra] = {"loss": float(torch.cat(losses).mean()), "grads": grads, "n_rows": len(rows)}
    torch.save(results, Path(out) / f"grads{rank}.pt")


def _fit_worker(rank: int, port: int, out: str) -> None:
    _init(rank, port)
    import scclip.training._loop as training  # the loop's own reference to save_checkpoint

    real_save, events = training.save_checkpoint, []

    def counting_save(stem, **kw):
        Path(out, f"saves{rank}.txt").open("a").write(f"{Path(stem).name}\n")
        real_save(stem, **kw)

    training.save_checkpoint = counting_save
    rna, atac = _data()
    kw = dict(
        train_idx=np.arange(28),
        val_idx=np.arange(28, N_CELLS),
        out_dir=Path(out) / "run",
        progress=events.append,
    )
    first = fit(_model(), rna, atac, cfg=TrainConfig(epochs=2, batch_size=BATCH, patience=50), **kw)
    resumed = fit(
        _model(), rna, atac, cfg=TrainConfig(epochs=3, batch_size=BATCH, patience=50), resume=True, **kw
    )
    Path(out, f"fit{rank}.json").write_text(
        json.dumps(
            {
                "first": first["history"],
                "resumed": resumed["history"],
                "world": resumed["world_size"],
                "n_events": len(events),
                "still_distributed": world_info() == (rank, 2),
            }
        )
    )


def test_shards_of_all_ranks_are_the_single_process_batches():
    idx = np.arange(3, 103)
    single = shard_batches(idx, epoch=2, seed=5, batch_size=24)
    shards = [shard_batches(idx, epoch=2, seed=5, batch_size=24, rank=r, world_size=4) for r in range(4)]
    assert len(single) == 4 and all(len(s) == len(single) for s in shards)  # drop_last: 100 // 24
    for b, batch in enumerate(single):
        assert all(len(s[b]) == 6 for s in shards)
        np.testing.assert_array_equal(np.sort(np.concatenate([s[b] for s in shards])), batch)


def test_two_gloo_ranks_give_the_single_process_loss_and_gradients(tmp_path):
    torch.multiprocessing.spawn(_grad_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"grads{r}.pt") for r in range(2)]
    for intra in (0.0, 1.0):
        rows = shard_batches(np.arange(N_CELLS), epoch=0, seed=0, batch_size=BATCH)[0]
        loss, grads = _step(
            _model(torch.float64), rows, intra, TrainConfig()
        )  # float64 (the encoder ends in float32)
        assert len(rows) == BATCH and ranks[0][intra]["n_rows"] == BATCH // 2
        for res in ranks:
            assert res[intra]["loss"] == pytest.approx(loss, rel=1e-7)
            assert res[intra]["grads"].keys() == grads.keys()
            for name, g in grads.items():  # relative error of each gradient tensor
                err = float((res[intra]["grads"][name] - g).norm() / g.norm().clamp_min(1e-12))
                assert err < 1e-5, f"{name} (intra_negatives={intra}): relative error {err:.2e}"


def test_two_rank_fit_writes_once_resumes_and_matches_one_process(tmp_path):
    torch.multiprocessing.spawn(_fit_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    out = [json.loads((tmp_path / f"fit{r}.json").read_text()) for r in range(2)]
    assert out[0]["world"] == 2 and out[0]["still_distributed"]
    assert out[0]["n_events"] > 0 and out[1]["n_events"] == 0  # progress on rank 0 only
    assert not (tmp_path / "saves1.txt").exists()  # only rank 0 writes checkpoints
    saves = (tmp_path / "saves0.txt").read_text().split()
    assert saves.count("last") == 3
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "best.json",
        "best.safetensors",
        "last.json",
        "last.safetensors",
        "last_ema.json",  # weight averaging (on by default) is checkpointed for resume
        "last_ema.safetensors",
    ]
    assert [h["epoch"] for h in out[0]["resumed"]] == [1, 2, 3]
    assert out[0]["resumed"][:2] == out[0]["first"]
    for key in ("loss", "val_foscttm", "temperature"):
        assert [h[key] for h in out[0]["resumed"]] == [h[key] for h in out[1]["resumed"]]
    # One process, three epochs straight through, on the same global batches: the same run.
    rna, atac = _data()
    single = fit(
        _model(),
        rna,
        atac,
        train_idx=np.arange(28),
        val_idx=np.arange(28, N_CELLS),
        cfg=TrainConfig(epochs=3, batch_size=BATCH, patience=50),
        out_dir=tmp_path / "single",
    )
    for h_ddp, h_one in zip(out[0]["resumed"], single["history"], strict=True):
        assert h_ddp["loss"] == pytest.approx(h_one["loss"], rel=1e-3)
        assert h_ddp["temperature"] == pytest.approx(h_one["temperature"], rel=1e-3)
        assert h_ddp["val_foscttm"] == pytest.approx(h_one["val_foscttm"], abs=0.03)  # 12 cells: rank flips
