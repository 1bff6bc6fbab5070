"""Which genome regions make a group of cells look alike: integrated gradients at the patch tokens.

Each patch token is one contiguous stretch of the genome (:class:`scclip.features.FeatureSpace`), so an
attribution per token is an attribution per region. :func:`patch_attribution` returns one row per patch and
modality; :func:`scclip.explore.genome_track` draws it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from scclip.errors import ScclipError
from scclip.explore.constants import MODALITY_LABELS
from scclip.explore.feature_values import FeatureStore
from scclip.explore.markers import as_cells, cells_in_modality
from scclip.model.jagged import Jagged
from scclip.model.patch import SparseBatch

#: Group cells per modality above which :func:`patch_attribution` subsamples (seeded).
MAX_ATTRIBUTION_CELLS = 1000
#: Reference cells per modality above which they are subsampled (seeded): the reference enters as a mean.
MAX_REFERENCE_CELLS = 256
#: Gradient evaluations (cells x path points) per modality above which fewer path points are used.
ATTRIBUTION_BUDGET = 5120
#: The fewest path points a budget leaves per cell.
MIN_PATH_POINTS = 4
#: Token sequences per forward / backward pass.
PATH_BATCH = 512
#: Features listed per patch in ``top_features``.
TOP_FEATURES = 5


def _forward_from_tokens(enc, patch_tokens: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The encoder's unit embedding from given patch tokens (B, P, d): [CLS] and positions added as
    ``ModalityEncoder.tokens`` does, then ``ModalityEncoder.transform`` (the cell's own non-empty layout
    when the model skips empty patches)."""
    x = torch.cat([enc.cls.expand(patch_tokens.shape[0], -1, -1), patch_tokens], dim=1) + enc.pos
    if keep is None:
        return enc.transform(x)
    layout = Jagged.from_keep(keep)
    return enc.transform(layout.gather(x), layout)


def path_points(n_cells: int, steps: int, budget: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint-rule nodes and weights on ``[0, 1]``, each ``(points, n_cells)``: ``steps`` points per cell
    while ``n_cells * steps <= budget`` (or ``budget`` is None), else ``max(MIN_PATH_POINTS, budget //
    n_cells)`` (deterministic: the same cells give the same attributions).

    Measured on the shipped SNARE-seq model (600 cells, 32 midpoints as the reference): 4 midpoints give
    per-patch attributions with correlation 0.9998 and the same top 10 patches, completeness within 0.7%;
    Gauss-Legendre with 4 nodes was off by 8% (its first node sits where the path bends most), and 2 or 4
    stratified random points per cell had correlation 0.990 / 0.998.
    """
    k = int(steps)
    if budget is not None and n_cells * k > budget:
        k = min(k, max(MIN_PATH_POINTS, int(budget) // max(n_cells, 1)))
    nodes = (np.arange(k) + 0.5) / k
    return np.repeat(nodes[:, None], n_cells, axis=1), np.full((k, n_cells), 1.0 / k)


def _integrated_gradients(enc, batch: SparseBatch, target: torch.Tensor, path: tuple, base: torch.Tensor):
    """IG of ``s = cos(f(x), target)`` for a batch at the patch tokens, and gradient x input per non-zero.

    Path: token = baseline + alpha (token(x) - baseline) at the ``path`` nodes (``(alphas, weights)``, each
    (points, B)); the real tokens, computed from the feature values, ride along in the same pass for the
    per-feature gradient x input (and, for models that skip empty patches, the cell's own baseline layout).
    Returns (attributions (B, P), s(x) (B,), s(baseline) (B,) or None, non-zero columns, contributions)."""
    alphas, weights = path
    values = batch.values.clone().requires_grad_(True)
    live = SparseBatch(batch.rows, batch.cols, values, batch.n_cells, batch.sorted_cols)
    real = enc.embed(live)  # (B, P, d), differentiable in the values
    keep = enc.keep_mask(batch) if getattr(enc.cfg, "skip_empty_patches", False) else None
    S, B = alphas.shape
    a = torch.as_tensor(alphas, dtype=real.dtype)[:, :, None, None]  # (S, B, 1, 1)
    delta = (real - base).detach()
    points = (base[None] + a * delta[None]).reshape(S * B, *real.shape[1:]).requires_grad_(True)
    parts = [points, real] + ([] if keep is None else [base.expand_as(real)])  # + the cell's own baseline
    keep_all = None if keep is None else keep.repeat(S + 2, 1)
    s = _forward_from_tokens(enc, torch.cat(parts), keep_all) @ target  # ((S + 1 or 2) * B,)
    grad, g_values = torch.autograd.grad(s.sum(), (points, values))
    w = torch.as_tensor(weights, dtype=grad.dtype)[:, :, None, None]  # (S, B, 1, 1)
    path_grad = (grad.view(S, B, *real.shape[1:]) * w).sum(0)  # (B, P, d): the weighted path integral
    contrib = (g_values * values).detach().numpy()
    s_x = s[S * B : (S + 1) * B].detach().numpy()
    s_0 = None if keep is None else s[(S + 1) * B :].detach().numpy()
    return (path_grad * delta).sum(-1).detach().numpy(), s_x, s_0, batch.cols.numpy(), contrib


def _model_inputs(model, store: FeatureStore, modality: str, rows: np.ndarray):
    from scclip.api import prepare_modality

    X, _ = prepare_modality(model, store.data[modality][rows], modality, genome=store.genome)
    return X.tocsr()


def _modality_attribution(model, store, modality, a, r, *, steps, budget, tick):
    """Per-patch and per-feature attributions of one modality: group A minus reference R (local rows)."""
    enc = model.net.encoders[modality]
    rows = np.concatenate([a, r])
    X = _model_inputs(model, store, modality, rows)
    with torch.no_grad():
        z = torch.cat([enc(SparseBatch.from_csr(X[i : i + 1024])) for i in range(0, a.size, 1024)])[: a.size]
        target = torch.nn.functional.normalize(z.mean(0), dim=0)
        base = enc.embed(
            SparseBatch.from_csr(sp.csr_matrix((1, X.shape[1]), dtype=np.float32))
        )  # all-zero cell
        s_base = float(_forward_from_tokens(enc, base, None) @ target)  # s(baseline), shared unless skipping
    P, n_feat = enc.embed.n_patches, X.shape[1]
    patch_sum, feat_sum = {"A": np.zeros(P), "R": np.zeros(P)}, {"A": np.zeros(n_feat), "R": np.zeros(n_feat)}
    s_sum, s0_sum = {"A": 0.0, "R": 0.0}, {"A": 0.0, "R": 0.0}
    alphas, weights = path_points(rows.size, steps, budget)
    batch_size = max(1, PATH_BATCH // (alphas.shape[0] + 2))
    for lo in range(0, rows.size, batch_size):
        hi = min(lo + batch_size, rows.size)
        batch = SparseBatch.from_csr(X[lo:hi])
        path = (alphas[:, lo:hi], weights[:, lo:hi])
        attr, s_x, s_0, cols, contrib = _integrated_gradients(enc, batch, target, path, base)
        s_0 = np.full(hi - lo, s_base) if s_0 is None else s_0
        rows_in = batch.rows.numpy()
        for g, sel in (("A", np.arange(lo, hi) < a.size), ("R", np.arange(lo, hi) >= a.size)):
            if sel.any():
                patch_sum[g] += attr[sel].sum(0)
                s_sum[g] += float(s_x[sel].sum())
                s0_sum[g] += float(s_0[sel].sum())
                nz = sel[rows_in]
                feat_sum[g] += np.bincount(cols[nz], weights=contrib[nz], minlength=n_feat)
        tick(hi - lo)
    n = {"A": a.size, "R": r.size}
    patch = patch_sum["A"] / n["A"] - patch_sum["R"] / n["R"]
    feature = feat_sum["A"] / n["A"] - feat_sum["R"] / n["R"]
    check = {
        "attribution_sum": float(patch.sum()),
        "target_difference": s_sum["A"] / n["A"] - s_sum["R"] / n["R"],
        "group_ig_sum": float(patch_sum["A"].sum() / n["A"]),
        "group_output_minus_baseline": (s_sum["A"] - s0_sum["A"]) / n["A"],
    }
    return patch, feature, check


def _patch_frame(model, modality: str, patch: np.ndarray, feature: np.ndarray, top: int) -> pd.DataFrame:
    feats = model.feature_space[modality]
    df = feats.to_frame()
    df["contribution"] = feature
    out = []
    for p, g in df.groupby("patch", sort=True):
        placed = g[g["chrom"] != ""]
        chrom = placed["chrom"].mode().iat[0] if len(placed) else ""
        on = placed[placed["chrom"] == chrom]
        best = g.reindex(g["contribution"].abs().sort_values(ascending=False).index[:top])
        best = best[best["contribution"] != 0]
        out.append(
            {
                "modality": modality,
                "patch": int(p),
                "chrom": chrom,
                "start": int(on["start"].min()) if len(on) else 0,
                "end": int(on["end"].max()) if len(on) else 0,
                "n_features": len(g),
                "attribution": float(patch[int(p)]),
                "top_features": "; ".join(
                    f"{n} {c:+.4f}" for n, c in zip(best["name"], best["contribution"], strict=True)
                ),
            }
        )
    return pd.DataFrame(out)


def _plan(store, mods, group, ref, limits: dict, rng) -> tuple[dict, list]:
    """Per modality: (group rows, reference rows) local to the modality, subsampled; and notes."""
    plan, notes = {}, []
    for m in mods:
        a, note = cells_in_modality(store, group, m)
        r = np.setdiff1d(cells_in_modality(store, ref, m)[0], a)
        if a.size == 0 or r.size == 0:
            continue
        notes += [f"{MODALITY_LABELS[m]}: {note}"] if note else []
        for name, g in (("group", a), ("reference", r)):
            if g.size > limits[name]:
                notes.append(f"{MODALITY_LABELS[m]} {name}: a random {limits[name]} of its {g.size} cells")
        plan[m] = tuple(
            np.sort(rng.choice(g, min(g.size, limits[n]), replace=False))
            for g, n in ((a, "group"), (r, "reference"))
        )
    if not plan:
        raise ScclipError("the group and the reference need cells of a modality the model reads")
    return plan, notes


def patch_attribution(
    model,
    data,
    cells,
    *,
    reference=None,
    steps: int = 32,
    progress: Callable[[float, str], None] | None = None,
    max_cells: int = MAX_ATTRIBUTION_CELLS,
    max_reference: int = MAX_REFERENCE_CELLS,
    budget: int | None = ATTRIBUTION_BUDGET,
    top_features: int = TOP_FEATURES,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-patch integrated-gradients attribution of a group's embedding, per modality, relative to a reference.

    Target: ``s(x) = cos(f(x), m)``, the cosine of a cell's Transformer embedding ``f(x)`` (the model's
    ``encoders[modality]``; a fused feature path, when the model has one, is left out) to the normalised mean
    embedding ``m`` of the group's cells. Integrated gradients are taken at the patch tokens (the patch
    embedding's outputs, before [CLS], positions and the Transformer) from the **baseline of empty patches**:
    every token set to the token of an empty patch, i.e. the embedding of an all-zero cell
    (``LayerNorm(bias)``). Models that skip empty patches keep each cell's own non-empty layout on the path.
    The ``steps`` points of the path are the midpoints of ``[0, 1]``.

    ``attribution`` = mean IG over the group's cells minus mean IG over the reference cells. By completeness
    it sums to ``mean_group s - mean_reference s`` (the baseline term cancels): how much more the group's
    cells resemble the group than the reference cells do, split over the genome.

    Parameters
    ----------
    model
        A :class:`scclip.ScclipModel`.
    data
        The dataset's :class:`~scclip.explore.FeatureStore` or its counts MuData (``rna`` and / or ``atac``).
    cells, reference
        Global cell indices (RNA cells first, then ATAC, as in :class:`~scclip.explore.Joint`) or ``(obs
        column, value)``. ``reference`` ``None``: every other cell. Each modality uses its own cells of the
        group (with paired data, a group of the other modality stands for its own profiles).
    steps
        Points on the integration path.
    progress
        Called as ``progress(fraction_done, message)`` after each batch.
    max_cells, max_reference
        The group (per modality) and the reference are subsampled (seeded) above these; ``attrs['note']``
        says so. The reference only enters as a mean, so its default is smaller.
    budget
        Gradient evaluations (cells x path points) per modality. While ``cells x steps`` fits, every cell
        gets the ``steps``-point midpoint rule; above it, ``max(MIN_PATH_POINTS, budget // cells)`` midpoints
        (:func:`path_points`; 4 midpoints already agree with 32 to a correlation of 0.9998 on real data).
        ``attrs['check']`` reports both sides of completeness. ``None``: always ``steps`` points.
    top_features
        Features listed per patch, by gradient x input of ``s`` at the input (group minus reference).

    Returns
    -------
    DataFrame, one row per modality and patch: ``modality``, ``patch``, ``chrom``, ``start``, ``end`` (the
    patch's span on its main chromosome, from the model's FeatureSpace), ``n_features``, ``attribution``,
    ``top_features`` (``"Gad1 +0.0123; ..."``). ``attrs``: ``check`` (per modality: ``attribution_sum``,
    ``target_difference``, ``group_ig_sum``, ``group_output_minus_baseline``), ``note``, ``n_group``,
    ``n_reference``.
    """
    store = data if isinstance(data, FeatureStore) else FeatureStore(data)
    if int(steps) < 1:
        raise ScclipError(f"steps must be at least 1, got {steps}")
    group = as_cells(store, cells)
    ref = np.setdiff1d(np.arange(store.n), group) if reference is None else as_cells(store, reference)
    mods = [m for m in store.mods if m in model.feature_space.modalities]
    if not mods:
        raise ScclipError(f"the model reads {model.feature_space.modalities}; the data have {store.mods}")
    rng = np.random.default_rng(seed)
    limits = {"group": int(max_cells), "reference": int(max_reference)}
    plan, notes = _plan(store, mods, group, ref, limits, rng)
    total, done = sum(a.size + r.size for a, r in plan.values()), [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0] / total, f"attribution: {done[0]} of {total} cells")

    frames, checks = [], {}
    model.net.eval()
    for m, (a, r) in plan.items():
        patch, feature, checks[m] = _modality_attribution(
            model, store, m, a, r, steps=int(steps), budget=budget, tick=tick
        )
        frames.append(_patch_frame(model, m, patch, feature, int(top_features)))
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(
        check=checks,
        note="; ".join(notes),
        n_group={m: int(a.size) for m, (a, _) in plan.items()},
        n_reference={m: int(r.size) for m, (_, r) in plan.items()},
    )
    return out
