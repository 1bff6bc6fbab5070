"""The network: sparse patch embedding == dense reference, CLIP loss == naive formula, shapes, temperature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from scclip.errors import ScclipError
from scclip.model import ClipLoss, ModelConfig, ScCLIP, get_preset
from scclip.model.patch import PatchEmbedding, SparseBatch


def _layout(n: int, n_patches: int) -> dict:
    ps = -(-n // n_patches)
    i = np.arange(n)
    return {"patch": i // ps, "offset": i % ps, "n_patches": n_patches, "patch_size": ps}


def _random_csr(n_cells: int, n_features: int, density: float, seed: int) -> sp.csr_matrix:
    return sp.random(n_cells, n_features, density=density, format="csr", random_state=seed, dtype=np.float32)


@pytest.mark.parametrize("mode", ["per_patch", "shared"])
@pytest.mark.parametrize(("n_features", "n_patches"), [(37, 5), (64, 8), (10, 10)])
def test_sparse_patch_embedding_equals_dense_reference(mode, n_features, n_patches):
    torch.manual_seed(0)
    lay = _layout(n_features, n_patches)
    emb = PatchEmbedding(lay["patch"], lay["offset"], n_patches=n_patches, patch_size=lay["patch_size"],
                         d_model=16, mode=mode)
    with torch.no_grad():  # non-trivial bias so that a wrong slot shows
        emb.bias.normal_()
        emb.weight.normal_()
    X = _random_csr(6, n_features, 0.2, seed=1)
    sparse = emb(SparseBatch.from_csr(X))
    dense = emb.dense_reference(torch.from_numpy(X.toarray()))
    assert sparse.shape == (6, n_patches, 16)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)


def test_patch_embedding_gradients_match_dense():
    torch.manual_seed(0)
    lay = _layout(30, 4)
    emb = PatchEmbedding(lay["patch"], lay["offset"], n_patches=4, patch_size=lay["patch_size"], d_model=8,
                         mode="per_patch")
    X = _random_csr(5, 30, 0.3, seed=2)
    emb(SparseBatch.from_csr(X)).pow(2).sum().backward()
    g_sparse = emb.weight.grad.clone()
    emb.weight.grad = None
    emb.dense_reference(torch.from_numpy(X.toarray())).pow(2).sum().backward()
    torch.testing.assert_close(g_sparse, emb.weight.grad, rtol=1e-4, atol=1e-6)


def test_sparse_batch_roundtrip_and_dropout():
    X = _random_csr(7, 20, 0.3, seed=3)
    b = SparseBatch.from_csr(X)
    np.testing.assert_allclose(b.to_dense(20).numpy(), X.toarray())
    torch.manual_seed(0)
    dropped = b.dropout(0.5)
    assert 0 < dropped.values.numel() < b.values.numel()
    assert b.dropout(0.0) is b


def test_clip_loss_equals_naive_formula():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(9, 5), dim=-1)
    b = F.normalize(torch.randn(9, 5), dim=-1)
    scale = torch.tensor(7.0)
    loss = ClipLoss()(a, b, scale)
    logits = (scale * a @ b.T).numpy()
    naive = 0.0
    for i in range(9):  # -log softmax of the true partner, rows then columns
        naive -= logits[i, i] - math.log(np.exp(logits[i]).sum())
        naive -= logits[i, i] - math.log(np.exp(logits[:, i]).sum())
    assert loss.item() == pytest.approx(naive / 18, rel=1e-5)


def test_perfect_pairs_give_low_loss_and_shuffled_high():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(32, 16), dim=-1)
    perm = torch.randperm(32)
    good = ClipLoss()(a, a, torch.tensor(50.0)).item()
    bad = ClipLoss()(a, a[perm], torch.tensor(50.0)).item()
    assert good < 0.1 < bad


def test_model_outputs_unit_norm_and_clamped_temperature():
    cfg = get_preset("tiny")
    net = ScCLIP(cfg, {"rna": _layout(40, cfg.n_patches), "atac": _layout(90, cfg.n_patches)})
    net.eval()
    zr, za, scale = net(SparseBatch.from_csr(_random_csr(4, 40, 0.2, 0)), SparseBatch.from_csr(_random_csr(4, 90, 0.1, 1)))
    assert zr.shape == za.shape == (4, cfg.proj_dim)
    torch.testing.assert_close(zr.norm(dim=-1), torch.ones(4))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        net.logit_scale.fill_(10.0)
    assert net.scale().item() == pytest.approx(100.0, rel=1e-5)


def test_empty_cells_embed_without_nan():
    cfg = get_preset("tiny")
    net = ScCLIP(cfg, {"rna": _layout(40, cfg.n_patches), "atac": _layout(90, cfg.n_patches)}).eval()
    z = net.encode("rna", SparseBatch.from_csr(sp.csr_matrix((3, 40), dtype=np.float32)))
    assert torch.isfinite(z).all()


def test_config_presets_and_validation():
    paper = get_preset("paper")
    assert (paper.n_layers, paper.n_heads, paper.d_model, paper.d_ff, paper.n_patches, paper.proj_dim) == (
        6, 8, 256, 512, 128, 128)
    assert paper.patch_embedding == "shared"
    assert ModelConfig.from_dict(paper.to_dict()) == paper
    with pytest.raises(ScclipError, match="divisible"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ScclipError, match="unknown config"):
        get_preset("nonexistent")
    with pytest.raises(ScclipError, match="unknown model config keys"):
        ModelConfig.from_dict({"d_modell": 3})


def test_svd_init_sets_loadings_and_freezing_skips_optimizer():
    from scclip.model.init import svd_init_
    from scclip.training import TrainConfig, make_optimizer

    cfg = get_preset("tiny")
    assert cfg.embedding_init == "svd" and cfg.freeze_embedding
    net = ScCLIP(cfg, {"rna": _layout(40, cfg.n_patches), "atac": _layout(90, cfg.n_patches)})
    X = _random_csr(50, 40, 0.3, seed=4)
    svd_init_(net.encoders["rna"].embed, X)
    w = net.encoders["rna"].embed.weight
    assert not w.requires_grad
    # the loadings span the top right-singular subspace of X
    _, _, vt = np.linalg.svd(X.toarray(), full_matrices=False)
    top = vt[:5].T
    proj = top @ (top.T @ w.detach().numpy()[:, :5])
    np.testing.assert_allclose(proj, w.detach().numpy()[:, :5], atol=1e-3)
    opt_params = {id(p) for g in make_optimizer(net, TrainConfig()).param_groups for p in g["params"]}
    assert id(w) not in opt_params
    trainable = ScCLIP(get_preset("tiny", freeze_embedding=False), {"rna": _layout(40, 8), "atac": _layout(90, 8)})
    assert trainable.encoders["rna"].embed.weight.requires_grad


def test_svd_skip_leaves_out_the_leading_singular_vectors():
    from scclip.model.init import svd_loadings

    X = _random_csr(60, 30, 0.4, seed=5)
    vt = np.linalg.svd(X.toarray(), full_matrices=False)[2]
    load = svd_loadings(X, 4, skip=1)
    # columns are the 2nd..5th right singular vectors (up to sign), none of them the first
    for j in range(4):
        cos = abs(load[:, j] @ vt[j + 1]) / np.linalg.norm(load[:, j])
        assert cos > 0.99
        assert abs(load[:, j] @ vt[0]) / np.linalg.norm(load[:, j]) < 0.05
    with pytest.raises(ScclipError, match="svd_skip"):
        ModelConfig(svd_skip=-1)

