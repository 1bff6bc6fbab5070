"""Honest integration baselines on paired RNA + ATAC data: the split, PCA/LSI features, CCA, a contrastive MLP.

These reproduce the project's reference figures (``../shared/reference-figures.md``) on the SNARE-seq
development data: train on libraries 09A-09H, select models on a random 1,000 of those cells, test on 09I + 09J.

- RNA: ``normalize_total(1e4)`` + ``log1p`` + PCA(50), fitted on the training cells.
- ATAC: TF-IDF with ``idf = n_train / df`` (df = training cells in which the peak is open), l1-normalise rows,
  ``log1p(1e4 x)``, TruncatedSVD(51) fitted on the training cells with the first component dropped, and each
  cell's 50-vector standardised (zero mean, unit variance across its 50 values).
- PCA+CCA: :class:`sklearn.cross_decomposition.CCA` on the pairs.
- Contrastive MLP: per modality ``Linear(50, 256)-ReLU-Dropout(0.5)-Linear(256, 64)``, L2-normalised, symmetric
  InfoNCE with a learnable logit scale, early stopping on validation FOSCTTM.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from scclip import metrics
from scclip.errors import ScclipError


# --------------------------------------------------------------------------- split
@dataclass
class Split:
    """Integer positions of the cells in each part of a train/validation/test split."""

    train: np.ndarray  #: all cells of the training libraries (fit + val)
    fit: np.ndarray  #: training cells used for fitting (train minus val)
    val: np.ndarray  #: the model-selection cells (a random subset of train)
    test: np.ndarray  #: cells of the test libraries: never fitted on, never selected on


def snare_split(
    mdata,
    *,
    test_batches: tuple[str, ...] = ("09I", "09J"),
    n_val: int = 1000,
    seed: int = 0,
    batch_key: str = "batch",
) -> Split:
    """Split paired cells by library: ``test_batches`` are held out; ``n_val`` random training cells validate."""
    rna = _paired_modalities(mdata)[0]
    if batch_key not in rna.obs:
        msg = (
            f"mdata['rna'].obs has no '{batch_key}' column; pass batch_key= naming the library/batch column."
        )
        raise ScclipError(msg)
    batch = rna.obs[batch_key].astype(str).to_numpy()
    missing = sorted(set(test_batches) - set(batch))
    if missing:
        msg = f"test batches {missing} are not in obs['{batch_key}'] (it has {sorted(set(batch))})."
        raise ScclipError(msg)
    is_test = np.isin(batch, list(test_batches))
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if not 0 < n_val < train.size:
        msg = f"n_val must be between 1 and the {train.size - 1} training cells minus one, got {n_val}."
        raise ScclipError(msg)
    val = np.sort(np.random.default_rng(seed).choice(train, size=n_val, replace=False))
    return Split(train=train, fit=np.setdiff1d(train, val), val=val, test=test)


def _paired_modalities(mdata):
    for name in ("rna", "atac"):
        if name not in getattr(mdata, "mod", {}):
            msg = f"the MuData object has no '{name}' modality; baselines need paired mdata['rna'] and mdata['atac']."
            raise ScclipError(msg)
    rna, atac = mdata.mod["rna"], mdata.mod["atac"]
    if rna.n_obs != atac.n_obs or not (rna.obs_names == atac.obs_names).all():
        msg = "mdata['rna'] and mdata['atac'] must hold the same cells in the same order (paired data)."
        raise ScclipError(msg)
    return rna, atac


# --------------------------------------------------------------------------- features
def _csr(x) -> sp.csr_matrix:
    return (
        sp.csr_matrix(x, dtype=np.float32)
        if sp.issparse(x)
        else sp.csr_matrix(np.asarray(x, dtype=np.float32))
    )


def _row_scale(x: sp.csr_matrix, factor: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(sp.diags(factor.astype(np.float32)) @ x)


def _l1_rows(x: sp.csr_matrix, target: float = 1.0) -> sp.csr_matrix:
    tot = np.asarray(x.sum(axis=1)).ravel()
    return _row_scale(x, np.divide(target, tot, out=np.zeros_like(tot, dtype=np.float64), where=tot > 0))


def rna_pca(counts, *, fit_idx: np.ndarray, n_comps: int = 50, seed: int = 0) -> np.ndarray:
    """``normalize_total(1e4)`` + ``log1p`` + PCA(``n_comps``) fitted on ``fit_idx``; returns all cells' scores."""
    from sklearn.decomposition import PCA

    x = _l1_rows(_csr(counts), 1e4)
    x.data = np.log1p(x.data)
    pca = PCA(n_components=n_comps, svd_solver="arpack", random_state=seed).fit(x[fit_idx])
    return pca.transform(x).astype(np.float32)


def atac_lsi(counts, *, fit_idx: np.ndarray, n_comps: int = 50, seed: int = 0) -> np.ndarray:
    """TF-IDF (idf ``n / df`` from ``fit_idx``), l1, ``log1p(1e4 x)``, SVD(``n_comps + 1``) minus the first, per-cell z.

    Returns float64 ``(n_cells, n_comps)`` features.
    """
    from sklearn.decomposition import TruncatedSVD

    x = _csr(counts)
    df = np.asarray((x[fit_idx] > 0).sum(axis=0)).ravel()
    idf = (len(fit_idx) / np.maximum(df, 1)).astype(np.float32)
    x = _l1_rows(sp.csr_matrix(x @ sp.diags(idf)))
    x.data = np.log1p(1e4 * x.data)
    svd = TruncatedSVD(n_components=n_comps + 1, random_state=seed).fit(x[fit_idx])
    # float64 on purpose: the standardised rows sum to zero, so the features span one dimension fewer than their
    # count, and only in float64 is that null direction clean enough for CCA's pseudo-inverse to drop it.
    z = svd.transform(x)[:, 1:].astype(np.float64)
    sd = z.std(axis=1, keepdims=True)
    return (z - z.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def pca_lsi_features(
    mdata, *, fit_idx: np.ndarray, n_pcs: int = 50, n_lsi: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """RNA PCA and ATAC LSI features of every cell, with every transform fitted on ``fit_idx`` only."""
    rna, atac = _paired_modalities(mdata)
    return (
        rna_pca(rna.X, fit_idx=fit_idx, n_comps=n_pcs, seed=seed),
        atac_lsi(atac.X, fit_idx=fit_idx, n_comps=n_lsi, seed=seed),
    )


# --------------------------------------------------------------------------- CCA
@dataclass
class FittedCCA:
    """A fitted :class:`sklearn.cross_decomposition.CCA` that embeds each modality on its own."""

    model: object

    def embed_rna(self, x: np.ndarray) -> np.ndarray:
        m = self.model
        return ((np.asarray(x, dtype=np.float64) - m._x_mean) / m._x_std) @ m.x_rotations_

    def embed_atac(self, y: np.ndarray) -> np.ndarray:
        m = self.model
        return ((np.asarray(y, dtype=np.float64) - m._y_mean) / m._y_std) @ m.y_rotations_


def fit_cca(
    rna_feats: np.ndarray, atac_feats: np.ndarray, *, n_components: int = 20, max_iter: int = 500
) -> FittedCCA:
    """Fit CCA with ``n_components`` on paired feature rows."""
    from sklearn.cross_decomposition import CCA

    if len(rna_feats) != len(atac_feats):
        msg = f"CCA needs paired rows: got {len(rna_feats)} RNA and {len(atac_feats)} ATAC rows."
        raise ScclipError(msg)
    # float64: the standardised LSI vectors sum to zero (a rank-deficient block), and float32 NIPALS drifts there.
    x, y = np.asarray(rna_feats, dtype=np.float64), np.asarray(atac_feats, dtype=np.float64)
    return FittedCCA(CCA(n_components=n_components, max_iter=max_iter).fit(x, y))


# --------------------------------------------------------------------------- contrastive MLP
def _tower(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))


class ContrastiveMLP(nn.Module):
    """Two MLP towers (RNA, ATAC) into one L2-normalised space with a learnable logit scale (CLIP style)."""

    def __init__(self, n_rna: int, n_atac: int, *, hidden: int = 256, dim: int = 64, dropout: float = 0.5):
        super().__init__()
        self.rna = _tower(n_rna, hidden, dim, dropout)
        self.atac = _tower(n_atac, hidden, dim, dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_rna(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.rna(x), dim=1)

    def encode_atac(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.atac(x), dim=1)

    def loss(self, x_rna: torch.Tensor, x_atac: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the batch (row ``i`` of both inputs is one cell)."""
        logits = self.logit_scale.exp() * self.encode_rna(x_rna) @ self.encode_atac(x_atac).T
        target = torch.arange(len(logits))
        return (
            nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)
        ) / 2

    @torch.no_grad()
    def embed(self, x_rna: np.ndarray, x_atac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embed each modality separately (eval mode); returns numpy arrays."""
        was = self.training
        self.eval()
        r = self.encode_rna(torch.as_tensor(x_rna, dtype=torch.float32)).numpy()
        a = self.encode_atac(torch.as_tensor(x_atac, dtype=torch.float32)).numpy()
        self.train(was)
        return r, a


@dataclass
class MLPResult:
    """A trained :class:`ContrastiveMLP` (best validation state) and its training record."""

    model: ContrastiveMLP
    best_epoch: int
    best_val_foscttm: float
    train_seconds: float
    history: list[dict] = field(default_factory=list)


def train_contrastive_mlp(
    rna_fit: np.ndarray,
    atac_fit: np.ndarray,
    rna_val: np.ndarray,
    atac_val: np.ndarray,
    *,
    hidden: int = 256,
    dim: int = 64,
    dropout: float = 0.5,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    max_epochs: int = 300,
    patience: int = 20,
    seed: int = 0,
    max_logit_scale: float = 100.0,
    threads: int | None = 1,
) -> MLPResult:
    """Train the contrastive MLP on paired rows; early-stop on validation FOSCTTM and keep the best state.

    ``threads`` sets torch's intra-op threads while training (restored afterwards; ``None`` leaves them): the
    model is so small that one thread is fastest, and on a busy 2-core machine two threads were ~10x slower.
    """
    kw = {
        "hidden": hidden,
        "dim": dim,
        "dropout": dropout,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "patience": patience,
        "seed": seed,
        "max_logit_scale": max_logit_scale,
    }
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train_mlp(rna_fit, atac_fit, rna_val, atac_val, **kw)
    finally:
        torch.set_num_threads(before)


def _train_mlp(
    rna_fit: np.ndarray,
    atac_fit: np.ndarray,
    rna_val: np.ndarray,
    atac_val: np.ndarray,
    *,
    hidden: int,
    dim: int,
    dropout: float,
    lr: float,
    weight_decay: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    seed: int,
    max_logit_scale: float,
) -> MLPResult:
    if len(rna_fit) != len(atac_fit) or len(rna_val) != len(atac_val):
        msg = "the contrastive MLP needs paired rows: RNA and ATAC inputs must have the same number of cells."
        raise ScclipError(msg)
    if len(rna_fit) < 2 or len(rna_val) < 2:
        msg = "the contrastive MLP needs at least 2 training and 2 validation cells."
        raise ScclipError(msg)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xr, xa = torch.as_tensor(rna_fit, dtype=torch.float32), torch.as_tensor(atac_fit, dtype=torch.float32)
    model = ContrastiveMLP(xr.shape[1], xa.shape[1], hidden=hidden, dim=dim, dropout=dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    cap = math.log(max_logit_scale)
    best, best_state, best_epoch, stale, history = math.inf, None, 0, 0, []
    t0 = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(len(xr), generator=gen)
        total, n_seen = 0.0, 0
        for i0 in range(0, len(perm), batch_size):
            idx = perm[i0 : i0 + batch_size]
            if len(idx) < 2:
                continue
            loss = model.loss(xr[idx], xa[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(max=cap)
            total += loss.item() * len(idx)
            n_seen += len(idx)
        vr, va = model.embed(rna_val, atac_val)
        val = metrics.foscttm(vr, va)["mean"]
        history.append({"epoch": epoch, "train_loss": total / max(n_seen, 1), "val_foscttm": val})
        if val < best:
            best, best_state, best_epoch, stale = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return MLPResult(model, best_epoch, float(best), time.perf_counter() - t0, history)


def random_embedding(n_cells: int, *, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The floor: independent Gaussian ``dim``-d embeddings for RNA and ATAC (no information about pairing)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_cells, dim)).astype(np.float32), rng.standard_normal((n_cells, dim)).astype(
        np.float32
    )
