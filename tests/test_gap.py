"""The modality gap: measurement, closing it by cross-modal completion, and the intra-modal-negative loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scclip.errors import ScclipError
from scclip.gap import close_gap, modality_gap
from scclip.metrics import foscttm, modality_mixing
from scclip.model.clip import ClipLoss


def _gapped(n=400, d=16, seed=0):
    """Paired embeddings sharing a cell-type signal, each modality with its own offset and private noise."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 5, n)
    centres = rng.normal(size=(5, d))
    cell = centres[types] + 0.6 * rng.normal(size=(n, d))
    r = cell + 3.0 * np.eye(d)[0] + 0.3 * rng.normal(size=(n, d))
    a = cell + 3.0 * np.eye(d)[1] + 0.3 * rng.normal(size=(n, d))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(r), unit(a)


def test_modality_gap_measures_offsets():
    r, a = _gapped()
    same = modality_gap(r, r)
    assert same["mean_distance"] == pytest.approx(0.0, abs=1e-6)
    g = modality_gap(r, a)
    assert g["mean_distance"] > 0.5
    assert g["between"] < min(g["within_rna"], g["within_atac"])


def test_close_gap_mixes_modalities_and_keeps_matching():
    r, a = _gapped()
    before_mix = modality_mixing(r, a, k=30)
    before_fos = foscttm(r, a)["mean"]
    jr, ja, info = close_gap(r, a, k=10)
    assert before_mix < 0.3  # the synthetic data does have a gap
    assert modality_mixing(jr, ja, k=30) > 0.8
    assert foscttm(jr, ja)["mean"] <= before_fos + 0.01
    assert info["gap_after"]["mean_distance"] < 0.25 * info["gap_before"]["mean_distance"]
    assert jr.dtype == np.float32 and np.allclose(np.linalg.norm(jr, axis=1), 1.0, atol=1e-5)


def test_close_gap_unpaired_sizes_and_small_other_modality():
    r, a = _gapped()
    jr, ja, info = close_gap(r, a[:7], k=15)  # k capped at the 7 ATAC cells
    assert jr.shape == r.shape and ja.shape == (7, r.shape[1])
    assert info["k"] == 15


def test_close_gap_rejects_bad_input():
    r, a = _gapped()
    with pytest.raises(ScclipError, match="different widths"):
        close_gap(r, a[:, :8])
    with pytest.raises(ScclipError, match="positive integer"):
        close_gap(r, a, k=0)


def test_intra_negatives_loss_reduces_to_clip_and_penalises_same_modality_crowding():
    torch.manual_seed(0)
    r = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    a = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    scale = torch.tensor(10.0)
    plain = ClipLoss()(r, a, scale)
    assert ClipLoss(intra_negatives=1e-12)(r, a, scale) == pytest.approx(plain.item(), rel=1e-6)
    # naive 2N NT-Xent for the RNA side at weight 1
    logits = torch.cat([scale * r @ a.T, scale * r @ r.T - torch.eye(8) * 1e9], dim=1)
    naive_r = torch.nn.functional.cross_entropy(logits, torch.arange(8))
    logits_a = torch.cat([scale * a @ r.T, scale * a @ a.T - torch.eye(8) * 1e9], dim=1)
    naive_a = torch.nn.functional.cross_entropy(logits_a, torch.arange(8))
    full = ClipLoss(intra_negatives=1.0)(r, a, scale)
    assert full.item() == pytest.approx(((naive_r + naive_a) / 2).item(), rel=1e-5)
    assert full > plain  # more negatives can only raise the loss
    with pytest.raises(ValueError, match=">= 0"):
        ClipLoss(intra_negatives=-1)


def test_completion_in_blocks_equals_the_formula():
    from scclip.gap import _complete, _unit

    rng = np.random.default_rng(3)
    own, other = _unit(rng.normal(size=(50, 8))), _unit(rng.normal(size=(40, 8)))
    idx = rng.integers(0, 40, size=(50, 5))
    naive = _unit(own + other[idx].mean(axis=1))
    np.testing.assert_allclose(_complete(own, other, idx, block=7), naive, atol=1e-6)
