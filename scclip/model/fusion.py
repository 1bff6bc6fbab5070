"""The feature path beside the Transformer (late fusion).

PCA (RNA, of the model's log-normalised input) and LSI (ATAC, of the counts on the model's features: idf =
cells / cells with the feature, rows l1-normalised, ``log1p(1e4 x)``, SVD without its first, depth-driven
component, each cell standardised), fitted on the training cells, feed a contrastive two-layer MLP per modality:
the project's baseline recipe (:mod:`scclip.baselines`) on the model's features. (The Transformer's own TF-IDF
input made a weaker MLP: validation FOSCTTM 0.107 vs 0.085 on the first CV fold.)
With a **gene-activity bridge** (``gene_activity``, the default when the model's genes and ATAC features have
coordinates), the ATAC tower also gets each cell's gene activity (ATAC counts over each model gene's body + 2 kb
promoter, :func:`scclip.features.gene_activity_weights`), log-normalised (CP10k, log1p) and projected on the
*RNA* PCA: both towers then see coordinates of one gene space (cross-validated gain in ``docs/quality.md``).
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

#: MLP members of a new feature path (seeds ``seed .. seed + members - 1``, each early-stopped on its own random
#: cells of the training libraries), averaged by cosine. Chosen
#: by cross-validation (docs/quality.md, session 6): 3 members gave gap-closed FOSCTTM 0.0758 vs 0.0778 for one, at
#: about 10 s of training each.
DEFAULT_MEMBERS = 3


class FeaturePath:
    """Fixed linear projections (``components``: features x k; RNA also a ``mean``) and one or more MLP towers
    (members trained with different seeds; their unit embeddings are averaged by cosine)."""

    def __init__(self, projections: dict[str, dict[str, np.ndarray]], mlps, config: dict) -> None:
        mlps = list(mlps) if isinstance(mlps, list | tuple) else [mlps]
        self.projections, self.mlps = projections, [m.eval() for m in mlps]
        self.config = {**dict(config), "members": len(self.mlps)}

    @property
    def dim(self) -> int:
        """Width of :meth:`encode`'s output: the MLP's output width per member."""
        return int(self.config["dim"]) * len(self.mlps)

    def features(self, modality: str, X) -> np.ndarray:
        """``(n, k)`` PCA scores of preprocessed RNA rows, or per-cell standardised LSI scores of ATAC counts
        (both CSR on the model's features); with the gene-activity bridge, ATAC gets ``(n, 2k)``: the LSI
        scores and the gene activity's RNA-PCA scores, each block divided by its training-cell scale."""
        p = self.projections[modality]
        X = X if sp.issparse(X) else sp.csr_matrix(np.asarray(X, dtype=np.float32))
        counts = X
        if modality == "atac":
            X = lsi_input(X, p["idf"])
        if X.shape[1] != p["components"].shape[0]:
            msg = f"the {modality} matrix has {X.shape[1]} features; the feature path expects {p['components'].shape[0]}"
            raise ScclipError(msg)
        z = np.asarray(X @ p["components"], dtype=np.float64)  # (n, k)
        if modality == "rna":
            return (z - p["mean"] @ p["components"]).astype(np.float32)
        sd = z.std(axis=1, keepdims=True)
        z = (z - z.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        if "activity_rows" not in p:
            return z.astype(np.float32)
        scales = p["scales"]
        return np.concatenate([z / scales[0], self._activity_scores(counts) / scales[1]], axis=1).astype(
            np.float32
        )

    def _activity_scores(self, counts: sp.csr_matrix) -> np.ndarray:
        """``(n, k)`` RNA-PCA scores of the cells' log-normalised gene activity (ATAC counts -> genes)."""
        p, r = self.projections["atac"], self.projections["rna"]
        W = sp.csr_matrix(
            (np.ones(p["activity_rows"].size, np.float32), (p["activity_rows"], p["activity_cols"])),
            shape=(p["components"].shape[0], r["components"].shape[0]),
        )
        activity = log_cp10k(sp.csr_matrix(counts @ W))
        return np.asarray(activity @ r["components"], dtype=np.float64) - r["mean"] @ r["components"]

    @torch.inference_mode()
    def encode(self, modality: str, X) -> np.ndarray:
        """Unit ``(n, dim)`` feature-path embeddings (RNA: preprocessed rows; ATAC: counts): each member's unit
        embedding, concatenated and divided by sqrt(members), so cosines are the members' mean cosine."""
        f = torch.from_numpy(self.features(modality, X))  # (n, k)
        outs = [
            (m.encode_rna if modality == "rna" else m.encode_atac)(f) for m in self.mlps
        ]  # members x (n, dim)
        outs = [o / o.norm(dim=1, keepdim=True).clamp_min(1e-12) for o in outs]
        return (torch.cat(outs, dim=1) / np.sqrt(len(outs))).numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything as named tensors (for ``fusion.safetensors``): member 0 as ``mlp.*``, member i as ``mlpi.*``."""
        out = {f"{m}.{k}": torch.from_numpy(np.ascontiguousarray(v, dtype=_stored_dtype(v)))
               for m, p in self.projections.items() for k, v in p.items()}  # fmt: skip
        for i, mlp in enumerate(self.mlps):
            out.update(
                {f"mlp{i or ''}.{k}": v.detach().cpu().contiguous() for k, v in mlp.state_dict().items()}
            )
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict) -> FeaturePath:
        proj: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODALITIES}
        for key, value in tensors.items():
            head, _, rest = key.partition(".")
            if head in proj:
                proj[head][rest] = value.float().numpy() if value.is_floating_point() else value.numpy()
        k, mlps = int(config["n_components"]), []
        k_atac = 2 * k if config.get("gene_activity") else k
        for i in range(int(config.get("members", 1))):  # configs before session 6: one member
            mlp = ContrastiveMLP(k, k_atac, hidden=int(config["hidden"]), dim=int(config["dim"]))
            prefix = f"mlp{i or ''}."
            mlp.load_state_dict(
                {k2[len(prefix) :]: v.float() for k2, v in tensors.items() if k2.startswith(prefix)}
            )
            mlps.append(mlp)
        return cls(proj, mlps, config)


def _member_validation(
    fit_idx: np.ndarray, val_idx: np.ndarray, *, members: int, seed: int
) -> list[np.ndarray]:
    """Early-stopping cells of each member: ``val_idx`` for the first; for member i a seeded random set of the
    same size from ``fit_idx`` (so the members also train on different cells, as bagging does)."""
    out = [np.asarray(val_idx)]
    for i in range(1, members):
        rng = np.random.default_rng(seed + i)
        out.append(np.sort(rng.choice(np.asarray(fit_idx), size=len(val_idx), replace=False)))
    return out


def _stored_dtype(v: np.ndarray):
    """Integer arrays (the gene-activity pairs) stay int32 in ``fusion.safetensors``; the rest is float32."""
    return np.int32 if np.issubdtype(np.asarray(v).dtype, np.integer) else np.float32


def log_cp10k(X: sp.csr_matrix) -> sp.csr_matrix:
    """``log1p(1e4 * x / cell total)`` per cell (float32 CSR; empty cells stay empty)."""
    X = sp.csr_matrix(X, dtype=np.float32)
    totals = np.asarray(X.sum(axis=1)).ravel()
    X = sp.csr_matrix(sp.diags(np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)) @ X)
    X.data = np.log1p(X.data).astype(np.float32)
    return X


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


def _add_bridge(proj: dict, W: sp.coo_matrix, atac_counts, fit_idx: np.ndarray) -> None:
    """Store the gene-activity pairs and both ATAC blocks' scales (overall sd on the training cells)."""
    proj["atac"].update(activity_rows=W.row.astype(np.int32), activity_cols=W.col.astype(np.int32),
                        scales=np.ones(2, np.float32))  # fmt: skip
    probe = FeaturePath(
        proj, [], {"n_components": proj["atac"]["components"].shape[1], "hidden": 1, "dim": 1}
    )
    both = probe.features("atac", atac_counts[fit_idx])  # (n, 2k) with unit scales
    k = proj["atac"]["components"].shape[1]
    sd = [float(both[:, :k].std()), float(both[:, k:].std())]
    proj["atac"]["scales"] = np.array([s if s > 0 else 1.0 for s in sd], np.float32)


def fit_feature_path(
    X_rna,
    atac_counts,
    *,
    fit_idx: np.ndarray,
    val_idx: np.ndarray,
    n_components: int = 50,
    seed: int = 0,
    members: int = DEFAULT_MEMBERS,
    activity: sp.spmatrix | None = None,
) -> tuple[FeaturePath, dict]:
    """Fit the projections on ``fit_idx`` rows (training cells, validation included as in the baseline recipe)
    and ``members`` MLPs (seeds ``seed``, ``seed + 1``, ...): the first on them minus ``val_idx``, early-stopped
    on ``val_idx``; member i holds out (and early-stops on) its own seeded random cells of ``fit_idx``, of the
    same number. Returns the path and its record.

    ``X_rna``: the model's preprocessed RNA input; ``atac_counts``: ATAC counts on the model's features;
    ``activity``: ``(ATAC features x RNA features)`` 0/1 gene-activity weights
    (:func:`scclip.features.gene_activity_weights`) for the gene-activity bridge, or ``None`` (no bridge).
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
    if activity is not None and sp.csr_matrix(activity).nnz:
        _add_bridge(proj, sp.coo_matrix(activity), atac_counts, fit_idx)
        config["gene_activity"] = True
    probe = FeaturePath(proj, [], config)
    rf, af = probe.features("rna", X_rna), probe.features("atac", atac_counts)
    if not isinstance(members, int | np.integer) or members < 1:
        msg = f"members must be a positive integer, got {members!r}"
        raise ScclipError(msg)
    runs = []
    for i, val in enumerate(_member_validation(fit_idx, val_idx, members=members, seed=seed)):
        fit = np.setdiff1d(fit_idx, val)
        runs.append(train_contrastive_mlp(rf[fit], af[fit], rf[val], af[val], seed=seed + i))
    info = {"val_foscttm": [r.best_val_foscttm for r in runs], "best_epoch": [r.best_epoch for r in runs],
            "train_seconds": float(sum(r.train_seconds for r in runs)), **config, "members": int(members)}  # fmt: skip
    return FeaturePath(proj, [r.model for r in runs], config), info
