"""Baselines: split, features fitted only on training cells, CCA, contrastive MLP, random floor."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scclip import baselines as B
from scclip.errors import ScclipError
from scclip.metrics import foscttm


def _synthetic(n=400, seed=0):
    """Paired counts driven by one shared 4-d latent state per cell, in 4 'libraries'."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    rna = rng.poisson(np.exp(0.8 * z @ rng.normal(size=(4, 60)) - 1.0))
    atac = rng.poisson(np.exp(1.0 * z @ rng.normal(size=(4, 150)) - 2.5)).clip(max=3)
    names = [f"cell{i}" for i in range(n)]
    obs = pd.DataFrame({"batch": np.repeat(["L1", "L2", "L3", "L4"], n // 4)}, index=names)
    mods = {
        "rna": ad.AnnData(
            sp.csr_matrix(rna, dtype=np.float32),
            obs=obs.copy(),
            var=pd.DataFrame(index=[f"G{i}" for i in range(60)]),
        ),
        "atac": ad.AnnData(
            sp.csr_matrix(atac, dtype=np.float32),
            obs=obs.copy(),
            var=pd.DataFrame(index=[f"chr1:{i}00-{i}99" for i in range(150)]),
        ),
    }
    return md.MuData(mods)


@pytest.fixture(scope="module")
def mdata():
    return _synthetic()


def test_snare_split_is_disjoint_and_by_library(mdata):
    s = B.snare_split(mdata, test_batches=("L4",), n_val=50, seed=1)
    batch = mdata["rna"].obs["batch"].to_numpy()
    assert set(batch[s.test]) == {"L4"} and "L4" not in set(batch[s.train])
    assert len(s.val) == 50 and np.isin(s.val, s.train).all()
    assert len(np.intersect1d(s.fit, s.val)) == 0 and len(s.fit) + len(s.val) == len(s.train) == 300
    assert not np.array_equal(s.val, B.snare_split(mdata, test_batches=("L4",), n_val=50, seed=2).val)
    with pytest.raises(ScclipError, match="not in obs"):
        B.snare_split(mdata, test_batches=("09I",))
    with pytest.raises(ScclipError, match="n_val"):
        B.snare_split(mdata, test_batches=("L4",), n_val=300)


def test_features_are_fitted_on_training_cells_only(mdata):
    s = B.snare_split(mdata, test_batches=("L4",), n_val=50)
    r1, a1 = B.pca_lsi_features(mdata, fit_idx=s.train, n_pcs=10, n_lsi=10)
    assert r1.shape == (400, 10) and a1.shape == (400, 10)
    np.testing.assert_allclose(a1.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(a1.std(1), 1, atol=1e-4)
    other = mdata.copy()
    for mod in ("rna", "atac"):
        x = other[mod].X.toarray()  # tiny synthetic data
        x[s.test] = x[s.test] * 3 + 1  # change only the held-out cells
        other.mod[mod].X = sp.csr_matrix(x)
    r2, a2 = B.pca_lsi_features(other, fit_idx=s.train, n_pcs=10, n_lsi=10)
    np.testing.assert_allclose(np.abs(r2[s.train]), np.abs(r1[s.train]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.abs(a2[s.train]), np.abs(a1[s.train]), rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.abs(r2[s.test]), np.abs(r1[s.test]), atol=1e-3)


def test_cca_embeds_each_modality_like_sklearn(mdata):
    s = B.snare_split(mdata, test_batches=("L4",), n_val=50)
    r, a = (f.astype(np.float64) for f in B.pca_lsi_features(mdata, fit_idx=s.train, n_pcs=10, n_lsi=10))
    cca = B.fit_cca(r[s.fit], a[s.fit], n_components=4)
    xs, ys = cca.model.transform(r[s.test], a[s.test])
    np.testing.assert_allclose(cca.embed_rna(r[s.test]), xs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cca.embed_atac(a[s.test]), ys, rtol=1e-4, atol=1e-5)
    assert foscttm(cca.embed_rna(r[s.test]), cca.embed_atac(a[s.test]))["mean"] < 0.3
    with pytest.raises(ScclipError, match="paired rows"):
        B.fit_cca(r[:10], a[:9])


def test_contrastive_mlp_learns_pairing(mdata):
    threads = torch.get_num_threads()
    s = B.snare_split(mdata, test_batches=("L4",), n_val=60)
    r, a = B.pca_lsi_features(mdata, fit_idx=s.train, n_pcs=10, n_lsi=10)
    res = B.train_contrastive_mlp(
        r[s.fit], a[s.fit], r[s.val], a[s.val], hidden=64, dim=16, batch_size=64, max_epochs=15, patience=3
    )
    assert 1 <= res.best_epoch <= len(res.history) <= 15
    assert res.best_val_foscttm == min(h["val_foscttm"] for h in res.history)
    er, ea = res.model.embed(r[s.test], a[s.test])
    assert er.shape == (100, 16)
    np.testing.assert_allclose(np.linalg.norm(er, axis=1), 1, atol=1e-5)
    assert foscttm(er, ea)["mean"] < 0.3  # chance is 0.5
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.model.logit_scale.exp().item() <= 100 + 1e-4
    assert torch.get_num_threads() == threads  # training used 1 thread and restored the setting


def test_random_floor_is_chance():
    r, a = B.random_embedding(500, dim=64, seed=3)
    assert r.shape == a.shape == (500, 64)
    assert abs(foscttm(r, a)["mean"] - 0.5) < 0.03


@pytest.mark.realdata
def test_snare_split_sizes(snare_h5mu):
    m = md.read_h5mu(snare_h5mu)
    s = B.snare_split(m)
    assert (len(s.train), len(s.fit), len(s.val), len(s.test)) == (6968, 5968, 1000, 1717)
    assert set(m["rna"].obs["batch"].astype(str).to_numpy()[s.test]) == {"09I", "09J"}
