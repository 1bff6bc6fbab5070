"""The feature path fused with the Transformer (scclip.model.fusion): training, release folder, embedding in
memory and in chunks, and the fused cosine being the mean of the two paths' cosines."""

from __future__ import annotations

import json

import numpy as np
import pytest

import scclip
from scclip.datasets import synthetic_multiome
from scclip.model.fusion import DEFAULT_MEMBERS, fuse


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion")
    data = synthetic_multiome(300, n_genes=120, peaks_per_gene=2, seed=2)
    model = scclip.train(data, out_dir=tmp / "run", model_config="tiny", val_size=60, feature_path=True,
                         train_config={"epochs": 2, "batch_size": 64})  # fmt: skip
    return model, data, tmp


def test_fuse_is_unit_and_averages_the_cosines():
    rng = np.random.default_rng(0)
    t1, t2, p1, p2 = (rng.normal(size=(5, 8)) for _ in range(4))
    a, b = fuse(t1, p1), fuse(t2, p2)

    def cos(x, y):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
            y / np.linalg.norm(y, axis=1, keepdims=True)
        ).T

    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a @ b.T, (cos(t1, t2) + cos(p1, p2)) / 2, atol=1e-6)


def test_training_with_the_feature_path_writes_and_reloads_it(fused):
    model, data, tmp = fused
    folder = tmp / "run" / "model"
    assert (folder / "fusion.safetensors").is_file()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["feature_path"]["dim"] == 64 and cfg["feature_path"]["members"] == DEFAULT_MEMBERS
    assert len(model.summary["feature_path"]["val_foscttm"]) == DEFAULT_MEMBERS
    assert max(model.summary["feature_path"]["val_foscttm"]) < 0.5
    assert model.embed_dim == model.config.proj_dim + 64 * DEFAULT_MEMBERS
    loaded = scclip.load_pretrained(tmp / "run")
    emb_a, emb_b = scclip.embed(model, data), scclip.embed(loaded, data)
    for m in ("rna", "atac"):
        raw = emb_a[m].obsm["X_scclip_raw"]
        assert raw.shape == (300, model.embed_dim)
        np.testing.assert_allclose(raw, emb_b[m].obsm["X_scclip_raw"], atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-5)
    # the feature path's half is the MLP's embedding: changing it changes the result
    loaded.feature_path = None
    plain = scclip.embed(loaded, data)["rna"].obsm["X_scclip_raw"]
    assert plain.shape[1] == model.config.proj_dim


def test_chunked_embedding_with_the_feature_path_equals_in_memory(fused, tmp_path):
    model, data, _ = fused
    path = tmp_path / "cells.h5mu"
    data.write(path)
    a = scclip.embed(model, data)
    b = scclip.embed(model, str(path), chunk_size=70)
    for m in ("rna", "atac"):
        np.testing.assert_allclose(a[m].obsm["X_scclip_raw"], b[m].obsm["X_scclip_raw"], atol=1e-5)


def test_a_damaged_feature_path_file_is_a_clear_error(fused, tmp_path):
    import shutil

    from scclip.errors import ScclipError

    _, _, tmp = fused
    copy = tmp_path / "copy"
    shutil.copytree(tmp / "run" / "model", copy)
    (copy / "fusion.safetensors").write_bytes(b"broken")
    with pytest.raises(ScclipError, match=r"fusion.safetensors is missing or damaged"):
        scclip.load_pretrained(copy)


def test_members_average_by_cosine_and_one_member_files_still_load(fused):
    import torch

    from scclip.model.fusion import FeaturePath

    model, data, _ = fused
    path = model.feature_path
    X = np.asarray(data["rna"].X[:20].todense(), dtype=np.float32)
    X = np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1) * 1e4)  # any RNA rows will do
    both = path.encode("rna", X)
    f = torch.from_numpy(path.features("rna", X))
    units = [(lambda z: z / z.norm(dim=1, keepdim=True))(m.encode_rna(f)).detach().numpy() for m in path.mlps]
    assert len(units) == DEFAULT_MEMBERS > 1
    np.testing.assert_allclose(both @ both.T, np.mean([u @ u.T for u in units], axis=0), atol=1e-5)
    assert not np.allclose(units[0], units[1])  # the members differ (seeds)
    # a session-5 file: one member stored as mlp.*, no "members" in the config
    tensors = {
        k: v for k, v in path.tensors().items() if not k.startswith("mlp1.") and not k.startswith("mlp2.")
    }
    old = FeaturePath.from_tensors(tensors, {k: v for k, v in path.config.items() if k != "members"})
    assert old.dim == 64 and len(old.mlps) == 1
    np.testing.assert_allclose(old.encode("rna", X), units[0], atol=1e-5)


def test_gene_activity_weights_use_the_gene_body_and_2kb_either_side():
    import pandas as pd

    from scclip.features import gene_activity_weights

    genes = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2", ""], "start": [10_000, 50_000, 5_000, 0],
                          "end": [20_000, 51_000, 6_000, 0]})  # fmt: skip
    bins = pd.DataFrame({"chrom": ["chr1", "chr1", "chr1", "chr1", "chr2", "chr3"],
                         "start": [7_000, 21_500, 30_000, 8_500, 0, 0], "end": [8_001, 22_000, 49_000, 9_000, 9_000, 5]})  # fmt: skip
    W = gene_activity_weights(genes, bins).toarray()
    assert W.shape == (6, 4) and W.dtype == np.float32
    # gene 0 region 8,000-22,000: bins 1 (21,500) and 3 (8,500) overlap; bin 0 ends at 8,001 > 8,000: overlaps too
    np.testing.assert_array_equal(W[:, 0], [1, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(W[:, 1], [0, 0, 1, 0, 0, 0])  # 48,000-53,000 meets the bin ending at 49,000
    np.testing.assert_array_equal(W[:, 2], [0, 0, 0, 0, 1, 0])
    assert W[:, 3].sum() == 0  # no coordinates: no activity


def test_the_gene_activity_bridge_feeds_the_atac_tower_and_reloads(fused):
    import scipy.sparse as sp

    from scclip.api import map_modality
    from scclip.features import gene_activity_weights
    from scclip.model.fusion import FeaturePath, fit_feature_path, log_cp10k

    model, data, _ = fused
    path = model.feature_path
    assert path.config["gene_activity"] is True and model.summary["feature_path"]["gene_activity"] is True
    counts = sp.csr_matrix(map_modality(data["atac"], model.feature_space["atac"])[0])
    feats = path.features("atac", counts)
    k = path.config["n_components"]
    assert feats.shape == (counts.shape[0], 2 * k)
    # the second block: log-normalised gene activity on the RNA PCA, divided by its stored scale
    fs = model.feature_space
    W = gene_activity_weights(fs["rna"].to_frame(), fs["atac"].to_frame())
    rna = path.projections["rna"]
    expect = np.asarray(log_cp10k(counts @ W) @ rna["components"]) - rna["mean"] @ rna["components"]
    np.testing.assert_allclose(feats[:, k:], expect / path.projections["atac"]["scales"][1], atol=1e-4)
    assert feats[:, k:].std() == pytest.approx(1.0, rel=0.2)  # unit scale on the training cells
    # stored as int32 pairs, read back exactly
    t = path.tensors()
    assert str(t["atac.activity_rows"].dtype) == "torch.int32"
    back = FeaturePath.from_tensors(t, path.config)
    np.testing.assert_array_equal(
        back.projections["atac"]["activity_cols"], path.projections["atac"]["activity_cols"]
    )
    np.testing.assert_allclose(back.encode("atac", counts), path.encode("atac", counts), atol=1e-6)
    # without the bridge (files of sessions 5-6): k ATAC inputs, no activity arrays
    X_rna = sp.random(counts.shape[0], rna["components"].shape[0], density=0.2, format="csr", random_state=0)
    plain, _ = fit_feature_path(
        X_rna, counts, fit_idx=np.arange(240), val_idx=np.arange(200, 240), members=1
    )
    assert (
        "gene_activity" not in plain.config
        and plain.features("atac", counts).shape[1] == plain.config["n_components"]
    )
