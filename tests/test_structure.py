"""Within-modality structure distillation (scclip.model.structure) and its switch in training."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from scclip.errors import ScclipError
from scclip.model import ScCLIP
from scclip.model.config import ModelConfig
from scclip.model.patch import PatchEmbedding, SparseBatch
from scclip.model.structure import resolve_structure_weight, structure_loss, teacher_vectors
from scclip.training import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import N_ATAC, N_CELLS, N_RNA, _data, _layout


@pytest.mark.parametrize("mode", ["per_patch", "shared"])
def test_teacher_is_the_cells_projection_on_the_feature_vectors(mode):
    torch.manual_seed(0)
    X = sp.random(12, 30, density=0.3, format="csr", random_state=3, dtype=np.float32)
    lay = _layout(30, 5)
    embed = PatchEmbedding(lay["patch"], lay["offset"], n_patches=5, patch_size=lay["patch_size"], d_model=7, mode=mode)
    W = embed.weight.detach()[embed.weight_index]  # (n_features, d): each feature's vector
    want = F.normalize(torch.from_numpy(X.toarray()) @ W, dim=1)
    got = teacher_vectors(embed, SparseBatch.from_csr(X))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not got.requires_grad


def test_structure_loss_is_zero_when_similarities_agree_and_pulls_towards_the_teacher():
    g = torch.Generator().manual_seed(0)
    t = F.normalize(torch.randn(10, 6, generator=g), dim=1)
    assert structure_loss(t, t, temperature=0.1).item() == pytest.approx(0.0, abs=1e-6)
    # a rotated copy has the same similarities: still zero
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    assert structure_loss(t @ q, t, temperature=0.1).item() == pytest.approx(0.0, abs=1e-5)
    z = F.normalize(torch.randn(10, 6, generator=g), dim=1).requires_grad_()
    loss = structure_loss(z, t, temperature=0.1)
    assert loss.item() > 0.1
    loss.backward()
    with torch.no_grad():  # one gradient step lowers it
        z2 = F.normalize(z - 0.05 * z.grad, dim=1)
    assert structure_loss(z2, t, temperature=0.1).item() < loss.item()
    assert structure_loss(z[:2], t[:2], temperature=0.1).item() == 0.0  # too few cells to compare


def _svd_model() -> ScCLIP:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, proj_dim=8, n_patches=6, feature_dropout=0.0)
    return ScCLIP(cfg, {"rna": _layout(N_RNA, 6), "atac": _layout(N_ATAC, 6)})


def test_fit_with_structure_weight_trains_differently_and_reproducibly(tmp_path):
    rna, atac = _data()
    kw = dict(train_idx=np.arange(28), val_idx=np.arange(28, N_CELLS))

    def run(name, w):
        cfg = TrainConfig(epochs=2, batch_size=16, structure_weight=w, ema_decay=0)
        return fit(_svd_model(), rna, atac, cfg=cfg, out_dir=tmp_path / name, **kw)["history"]

    plain, a, b = run("plain", 0.0), run("a", 1.0), run("b", 1.0)
    assert [h["loss"] for h in a] == [h["loss"] for h in b]  # same seed, same run
    assert a[0]["loss"] > plain[0]["loss"]  # the term adds a positive KL to the CLIP loss


def test_structure_settings_are_checked(tmp_path):
    with pytest.raises(ScclipError, match="structure_weight must be >= 0"):
        TrainConfig(structure_weight=-1)
    with pytest.raises(ScclipError, match="structure_temperature must be > 0"):
        TrainConfig(structure_temperature=0)
    with pytest.raises(ScclipError, match="structure_weight must be >= 0"):
        TrainConfig(structure_weight=float("nan"))
    with pytest.raises(ScclipError, match="intra_negatives must be >= 0"):
        TrainConfig(intra_negatives=-1)
    rna, atac = _data()
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, proj_dim=8, n_patches=6, embedding_init="random")
    model = ScCLIP(cfg, {"rna": _layout(N_RNA, 6), "atac": _layout(N_ATAC, 6)})
    with pytest.raises(ScclipError, match="embedding_init='svd'"):
        fit(model, rna, atac, cfg=TrainConfig(epochs=1, structure_weight=1.0), out_dir=tmp_path,
            train_idx=np.arange(28), val_idx=np.arange(28, N_CELLS))


def test_default_weight_follows_the_embedding_and_resume_keeps_the_objective(tmp_path):
    assert resolve_structure_weight(None, ModelConfig()) == 1.0
    assert resolve_structure_weight(None, ModelConfig(patch_embedding="shared")) == 0.0
    assert resolve_structure_weight(None, ModelConfig(embedding_init="random")) == 0.0
    assert resolve_structure_weight(None, ModelConfig(freeze_embedding=False)) == 0.0  # a teacher that would move
    with pytest.raises(ScclipError, match="freeze_embedding=False"):
        resolve_structure_weight(1.0, ModelConfig(freeze_embedding=False))
    assert resolve_structure_weight(0.3, ModelConfig()) == 0.3
    rna, atac = _data()
    kw = dict(train_idx=np.arange(28), val_idx=np.arange(28, N_CELLS), out_dir=tmp_path)
    fit(_svd_model(), rna, atac, cfg=TrainConfig(epochs=1, batch_size=16, structure_weight=0.0), **kw)
    with pytest.raises(ScclipError, match=r"trained with structure_weight=0 .* --structure-weight 0"):
        fit(_svd_model(), rna, atac, cfg=TrainConfig(epochs=2, batch_size=16), resume=True, **kw)
    res = fit(_svd_model(), rna, atac, cfg=TrainConfig(epochs=2, batch_size=16, structure_weight=0.0), resume=True, **kw)
    assert len(res["history"]) == 2
