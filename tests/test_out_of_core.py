"""Out-of-core training (``train(..., out_of_core=True)``, ``scclip train --out-of-core``): the on-disk CSR cache
round-trips exactly, streamed batches cover every training cell once per epoch in a seeded chunk order, equal
seeds give equal models, the CLI runs end to end, and bad option combinations are refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import scclip
from scclip.cli import main
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError
from scclip.io import DiskCSR, DiskCSRWriter, write_h5mu
from scclip.training import ChunkStream

N = 240


@pytest.fixture(scope="module")
def h5mu(tmp_path_factory):
    path = tmp_path_factory.mktemp("ooc") / "cells.h5mu"
    write_h5mu(synthetic_multiome(n_cells=N, seed=3), path)
    return path


def _random_csr(n, m, seed, density=0.1):
    X = sp.random(n, m, density=density, format="csr", random_state=seed, dtype=np.float32)
    X.data = np.ceil(X.data * 5)
    return X


def test_disk_csr_round_trips_exactly(tmp_path):
    X = _random_csr(103, 57, seed=0).tolil()
    X[5] = 0  # an empty row
    X = sp.csr_matrix(X)
    w = DiskCSRWriter(tmp_path / "m", n_cols=57)
    for lo in range(0, 103, 20):
        w.append(X[lo : lo + 20])
    D = w.close()
    assert D.shape == X.shape and D.nnz == X.nnz
    back = sp.vstack([c for _, _, c in D.chunks(17)], format="csr")
    assert (back != X).nnz == 0
    assert np.array_equal(back.indptr, X.indptr) and back.dtype == np.float32
    assert (DiskCSR(tmp_path / "m").rows(40, 60) != X[40:60]).nnz == 0
    assert DiskCSR(tmp_path / "m").rows(100, 200).shape == (3, 57)


def test_disk_csr_refuses_unfinished_or_mismatched(tmp_path):
    w = DiskCSRWriter(tmp_path / "m", n_cols=5)
    with pytest.raises(ScclipError, match="columns"):
        w.append(_random_csr(3, 6, seed=1))
    with pytest.raises(ScclipError, match="no finished"):
        DiskCSR(tmp_path / "m")
    w.append(_random_csr(3, 5, seed=1))
    w.close()
    with open(tmp_path / "m" / "data.bin", "ab") as f:
        f.write(b"\0\0\0\0")
    with pytest.raises(ScclipError, match="incomplete or damaged"):
        DiskCSR(tmp_path / "m")


def _stream(tmp_path, n=95, **kw):
    X = sp.csr_matrix(np.arange(n, dtype=np.float32)[:, None] + 1)  # row i holds the value i + 1
    caches = [DiskCSRWriter(tmp_path / m, n_cols=1) for m in ("rna", "atac")]
    for c in caches:
        c.append(X)
    rna, atac = (c.close() for c in caches)
    train = np.setdiff1d(np.arange(n), [3, 50, 51])
    return ChunkStream(rna, atac, train, **{"chunk_size": 10, "seed": 0, **kw}), train


@pytest.mark.parametrize("world", [1, 2])
def test_stream_covers_every_training_cell_once_per_epoch(tmp_path, world):
    stream, train = _stream(tmp_path, chunks_per_load=2)
    seen = {}
    for epoch in (0, 1):
        rows = []
        for rank in range(world):
            steps = list(stream.batches(epoch, batch_size=16, rank=rank, world_size=world))
            assert len(steps) == stream.n_steps(batch_size=16, world_size=world)
            for ids, rna, atac in steps:
                assert np.array_equal(rna.toarray().ravel(), ids + 1) and (rna != atac).nnz == 0
                rows.append(ids)
        rows = np.concatenate(rows)
        assert len(rows) == len(np.unique(rows))  # no cell twice
        if world == 1:
            assert np.array_equal(np.sort(rows), train)  # 92 cells: 5 full batches and one of 12
        seen[epoch] = rows
    assert not np.array_equal(seen[0], seen[1])  # a new chunk and cell order each epoch
    again, _ = _stream(tmp_path / "again", chunks_per_load=2)
    if world == 1:  # the order depends only on the seed
        assert np.array_equal(np.concatenate([i for i, _, _ in again.batches(1, batch_size=16)]), seen[1])


def test_stream_mixes_chunks_and_applies_the_transform(tmp_path):
    stream, _ = _stream(tmp_path, chunks_per_load=3, transform=lambda m, X: X * (2 if m == "rna" else 3))
    ids, rna, atac = next(stream.batches(0, batch_size=30))
    assert len(np.unique(ids // 10)) > 1  # cells of several chunks in one batch
    assert np.array_equal(rna.toarray().ravel(), 2 * (ids + 1))
    assert np.array_equal(atac.toarray().ravel(), 3 * (ids + 1))


def _train(h5mu, out, seed=0, **kw):
    return scclip.train(
        h5mu, out_dir=out, model_config="tiny", chunk_size=50, out_of_core=True, val_size=30,
        train_config={"epochs": 2, "batch_size": 64, "seed": seed}, **kw,
    )  # fmt: skip


def test_same_seed_same_model_out_of_core(h5mu, tmp_path):
    a, b = _train(h5mu, tmp_path / "a"), _train(h5mu, tmp_path / "b")
    c = _train(h5mu, tmp_path / "c", seed=1)
    sa, sb, sc = (m.net.state_dict() for m in (a, b, c))
    assert all(torch_equal(sa[k], sb[k]) for k in sa)
    assert not all(torch_equal(sa[k], sc[k]) for k in sa)
    s = a.summary
    assert s["n_train_cells"] == N - 30 and s["epochs_run"] == 2 and np.isfinite(s["validation"]["foscttm"])
    assert s["out_of_core"]["chunk_size"] == 50 and s["out_of_core"]["cache_bytes"] > 0
    assert not any(p.name.startswith("stream_cache") for p in (tmp_path / "a").iterdir())  # cache deleted
    emb = scclip.embed(a, str(h5mu), chunk_size=100)
    assert emb["rna"].obsm["X_scclip"].shape[0] == N


def test_out_of_core_idf_equals_in_memory(h5mu, tmp_path):
    ooc = _train(h5mu, tmp_path / "ooc")
    mem = scclip.train(
        h5mu, out_dir=tmp_path / "mem", model_config="tiny", chunk_size=50, val_size=30,
        train_config={"epochs": 1, "batch_size": 64},
    )  # fmt: skip
    np.testing.assert_allclose(ooc.idf, mem.idf, rtol=1e-6)


def test_out_of_core_holdout_is_scored(h5mu, tmp_path):
    m = _train(h5mu, tmp_path / "h", holdout_key="batch", holdout=["b1"])
    assert m.summary["n_holdout_cells"] > 1 and np.isfinite(m.summary["holdout_metrics"]["foscttm"])


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def test_cli_out_of_core_end_to_end(h5mu, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(h5mu), "--out", str(out), "--config", "tiny", "--chunk-size", "60",
               "--out-of-core", "--epochs", "3", "--max-steps", "4", "--batch-size", "64", "--val-size", "30"])  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "model" / "summary.json").read_text())
    assert summary["out_of_core"]["chunk_size"] == 60 and summary["train_config"]["max_steps"] == 4
    assert len(summary["history"]) == 1  # 210 training cells in batches of 64: 4 steps, one epoch of the 3
    emb = tmp_path / "emb.h5mu"
    assert (
        main(["embed", "--model", str(out), "--data", str(h5mu), "--chunk-size", "100", "--out", str(emb)])
        == 0
    )
    assert emb.is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out-of-core"], "give chunk_size"),
        (["--out-of-core", "--chunk-size", "50", "--feature-path"], "feature path"),
        (["--chunk-size", "50", "--max-steps", "0"], "--max-steps must be positive"),
    ],
)
def test_bad_option_combinations_are_refused(h5mu, tmp_path, capsys, extra, message):
    rc = main(["train", "--data", str(h5mu), "--out", str(tmp_path / "r"), "--config", "tiny", *extra])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
