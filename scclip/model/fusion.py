"""The feature path beside the Transformer (late fusion).

PCA (RNA, of the model's log-normalised input) and LSI (ATAC, of the counts on the model's features: idf =
cells / cells with the feature, rows l1-normalised, ``log1p(1e4 x)``, SVD without its first, depth-driven
component, each cell standardised), fitted on the training cells, feed a contrastive two-layer MLP per modality:
the project's baseline recipe (:mod:`scclip.baselines`) on the model's features. (The Transformer's own TF-IDF
input made a weaker MLP: validation FOSCTTM 0.107 vs 0.085 on the first CV fold.)
A cell's embedding is then its Transformer embedding and its feature-path embedding, each unit length,
concatenated and divided by sqrt(2): the cosine of two cells is the mean of the two paths' cosines. The two
paths make different errors (cross-validated in ``docs/quality.md``), so their mean ranks partners better than
either. Works on CSR matrices only (no AnnData), like the rest of ``scclip.model``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from scclip._constants import MODALITIES
from scclip.baselines import ContrastiveMLP, train_contrastive_mlp
from scclip.errors import ScclipError


class FeaturePath:
    """Fixed linear projections (``components``: features x k; RNA also a ``mean``) and the MLP towers."""

    def __init__(self, projections: dict[str, dict[str, np.ndarray]], mlp: ContrastiveMLP, config: dict) -> None:
        self.projections, self.mlp, self.config = projections, mlp.eval(), dict(config)

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    def features(self, modality: str, X) -> np.ndarray:
        """``(n, k)`` PCA scores of preprocessed RNA rows, or per-cell standardised LSI scores of ATAC counts
        (both CSR on the model's features)."""
        p = self.projections[modality]
        X = X if sp.issparse(X) else sp.csr_matrix(np.asarray(X, dtype=np.float32))
        if modality == "atac":
            X = lsi_input(X, p["idf"])
        if X.shape[1] != p["components"].shape[0]:
            msg = f"the {modality} matrix has {X.shape[1]} features; the feature path expects {p['components'].shape[0]}"
            raise ScclipError(msg)
        z = np.asarray(X @ p["components"], dtype=np.float64)  # (n, k)
        if modality == "rna":
            return (z - p["mean"] @ p["components"]).astype(np.float32)
        sd = z.std(axis=1, keepdims=True)
        return ((z - z.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)

    @torch.inference_mode()
    def encode(self, modality: str, X) -> np.ndarray:
        """Unit ``(n, dim)`` feature-path embeddings (RNA: preprocessed rows; ATAC: counts)."""
        f = torch.from_numpy(self.features(modality, X))
        tower = self.mlp.encode_rna if modality == "rna" else self.mlp.encode_atac
        return tower(f).numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything as named tensors (for ``fusion.safetensors``)."""
        out = {f"{m}.{k}": torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
               for m, p in self.projections.items() for k, v in p.items()}  # fmt: skip
        out.update({f"mlp.{k}": v.detach().cpu().contiguous() for k, v in self.mlp.state_dict().items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict) -> FeaturePath:
        proj: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODALITIES}
        for key, value in tensors.items():
            head, _, rest = key.partition(".")
            if head in proj:
                proj[head][rest] = value.float().numpy()
        k = int(config["n_components"])
        mlp = ContrastiveMLP(k, k, hidden=int(config["hidden"]), dim=int(config["dim"]))
        mlp.load_state_dict({k2[4:]: v.float() for k2, v in tensors.items() if k2.startswith("mlp.")})
        return cls(proj, mlp, config)


def lsi_input(counts, idf: np.ndarray) -> sp.csr_matrix:
    """``log1p(1e4 * l1(counts * idf))`` per cell (the baseline LSI input), float32 CSR."""
    X = sp.csr_matrix(counts, dtype=np.float32) @ sp.diags(np.asarray(idf, dtype=np.float32))
    X = sp.csr_matrix(X)
    totals = np.asarray(X.sum(axis=1)).ravel()
    X = sp.csr_matrix(sp.diags(np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)) @ X)
    X.data = np.log1p(1e4 * X.data).astype(np.float32)
    return X


def fuse(transformer: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Both paths' unit embeddings concatenated / sqrt(2): unit rows whose cosines are the mean of the paths'."""
    t = transformer / np.maximum(np.linalg.norm(transformer, axis=1, keepdims=True), 1e-12)
    p = path / np.maximum(np.linalg.norm(path, axis=1, keepdims=True), 1e-12)
    return (np.concatenate([t, p], axis=1) / np.sqrt(2.0)).astype(np.float32)


def fit_feature_path(
    X_rna, atac_counts, *, fit_idx: np.ndarray, val_idx: np.ndarray, n_components: int = 50, seed: int = 0
) -> tuple[FeaturePath, dict]:
    """Fit the projections on ``fit_idx`` rows (training cells, validation included as in the baseline recipe)
    and the MLP on them minus ``val_idx``, early-stopped on ``val_idx``; returns the path and its record.

    ``X_rna``: the model's preprocessed RNA input; ``atac_counts``: ATAC counts on the model's features.
    """
    from sklearn.decomposition import PCA, TruncatedSVD

    X_rna, atac_counts = sp.csr_matrix(X_rna, dtype=np.float32), sp.csr_matrix(atac_counts, dtype=np.float32)
    df = np.asarray((atac_counts[fit_idx] > 0).sum(axis=0)).ravel()
    idf = (len(fit_idx) / np.maximum(df, 1)).astype(np.float32)
    X_atac = lsi_input(atac_counts, idf)
    k = int(min(n_components, X_rna.shape[1] - 1, X_atac.shape[1] - 2, len(fit_idx) - 2))
    if k < 2:
        msg = "the feature path needs at least 4 features per modality and 4 training cells"
        raise ScclipError(msg)
    pca = PCA(n_components=k, svd_solver="arpack", random_state=seed).fit(X_rna[fit_idx])
    svd = TruncatedSVD(n_components=k + 1, random_state=seed).fit(X_atac[fit_idx])
    proj = {
        "rna": {"components": pca.components_.T.astype(np.float32), "mean": pca.mean_.astype(np.float32)},
        "atac": {"components": svd.components_[1:].T.astype(np.float32), "idf": idf},  # first: depth
    }
    config = {"n_components": k, "hidden": 256, "dim": 64}
    probe = FeaturePath(proj, ContrastiveMLP(k, k), config)
    rf, af = probe.features("rna", X_rna), probe.features("atac", atac_counts)
    fit = np.setdiff1d(fit_idx, val_idx)
    res = train_contrastive_mlp(rf[fit], af[fit], rf[val_idx], af[val_idx], seed=seed)
    info = {"val_foscttm": res.best_val_foscttm, "best_epoch": res.best_epoch, "train_seconds": res.train_seconds,
            **config}  # fmt: skip
    return FeaturePath(proj, res.model, config), info
