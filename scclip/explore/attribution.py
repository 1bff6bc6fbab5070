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

#: Cells per group (and per reference) above which :func:`patch_attribution` subsamples (seeded).
MAX_ATTRIBUTION_CELLS = 256
#: Gradient evaluations (cells x path points) per modality above which the path is sampled per cell.
ATTRIBUTION_BUDGET = 2048
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
    return enc.transform(x[keep], Jagged.from_keep(keep))


def path_points(n_cells: int, steps: int, budget: int | None, rng: np.random.Generator) -> np.ndarray:
    """``(points, n_cells)`` positions on the path per cell: the ``steps`` midpoints of ``[0, 1]`` while
    ``n_cells * steps <= budget`` (or ``budget`` is None), else ``max(1, budget // n_cells)`` stratified random
    points per cell (seeded; each stratum's mean gradient is then an unbiased estimate of the integral)."""
    if budget is None or n_cells * steps <= budget:
        return np.repeat(((np.arange(steps) + 0.5) / steps)[:, None], n_cells, axis=1)
    k = max(1, int(budget) // max(n_cells, 1))
    return (np.arange(k)[:, None] + rng.random((k, n_cells))) / k


def _integrated_gradients(
    enc, batch: SparseBatch, target: torch.Tensor, alphas: np.ndarray, base: torch.Tensor
):
    """IG of ``s = cos(f(x), target)`` for a batch at the patch tokens, and gradient x input per non-zero.

    Path: token = baseline + alpha (token(x) - baseline) at ``alphas`` (points, B), gradients averaged over the
    points; the real tokens, computed from the feature values, ride along in the same pass for the per-feature
    gradient x input, and so does the baseline. Returns (attributions (B, P), s(x) (B,), s(baseline) (B,),
    non-zero columns, their contributions)."""
    values = batch.values.clone().requires_grad_(True)
    live = SparseBatch(batch.rows, batch.cols, values, batch.n_cells, batch.sorted_cols)
    real = enc.embed(live)  # (B, P, d), differentiable in the values
    keep = enc.keep_mask(batch) if getattr(enc.cfg, "skip_empty_patches", False) else None
    S, B = alphas.shape
    a = torch.as_tensor(alphas, dtype=real.dtype)[:, :, None, None]  # (S, B, 1, 1)
    delta = (real - base).detach()
    path = (base[None] + a * delta[None]).reshape(S * B, *real.shape[1:]).requires_grad_(True)
    keep_all = None if keep is None else keep.repeat(S + 2, 1)
    tokens = torch.cat([path, real, base.expand_as(real)])  # the path, the cell, the baseline
    s = _forward_from_tokens(enc, tokens, keep_all) @ target  # ((S + 2) * B,)
    grad, g_values = torch.autograd.grad(s.sum(), (path, values))
    mean_grad = grad.view(S, B, *real.shape[1:]).mean(0)
    contrib = (g_values * values).detach().numpy()
    s_x, s_0 = s[S * B : (S + 1) * B].detach().numpy(), s[(S + 1) * B :].detach().numpy()
    return (mean_grad * delta).sum(-1).detach().numpy(), s_x, s_0, batch.cols.numpy(), contrib


def _model_inputs(model, store: FeatureStore, modality: str, rows: np.ndarray):
    from scclip.api import prepare_modality

    X, _ = prepare_modality(model, store.data[modality][rows], modality, genome=store.genome)
    return X.tocsr()


def _modality_attribution(model, store, modality, a, r, *, steps, budget, rng, tick):
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
    P, n_feat = enc.embed.n_patches, X.shape[1]
    patch_sum, feat_sum = {"A": np.zeros(P), "R": np.zeros(P)}, {"A": np.zeros(n_feat), "R": np.zeros(n_feat)}
    s_sum, s0_sum = {"A": 0.0, "R": 0.0}, {"A": 0.0, "R": 0.0}
    alphas = path_points(rows.size, steps, budget, rng)
    batch_size = max(1, PATH_BATCH // (alphas.shape[0] + 1))
    for lo in range(0, rows.size, batch_size):
        hi = min(lo + batch_size, rows.size)
        batch = SparseBatch.from_csr(X[lo:hi])
        attr, s_x, s_0, cols, contrib = _integrated_gradients(enc, batch, target, alphas[:, lo:hi], base)
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


def _plan(store, mods, group, ref, max_cells, rng) -> tuple[dict, list]:
    """Per modality: (group rows, reference rows) local to the modality, subsampled; and notes."""
    plan, notes = {}, []
    for m in mods:
        a, note = cells_in_modality(store, group, m)
        r = np.setdiff1d(cells_in_modality(store, ref, m)[0], a)
        if a.size == 0 or r.size == 0:
            continue
        notes += [f"{MODALITY_LABELS[m]}: {note}"] if note else []
        for name, g in (("group", a), ("reference", r)):
            if g.size > max_cells:
                notes.append(f"{MODALITY_LABELS[m]} {name}: a random {max_cells} of its {g.size} cells")
        plan[m] = tuple(np.sort(rng.choice(g, min(g.size, max_cells), replace=False)) for g in (a, r))
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
    max_cells
        Group and reference are each subsampled (seeded) above this; ``attrs['note']`` says so.
    budget
        Gradient evaluations (cells x path points) per modality. While ``cells x steps`` fits, every cell
        gets the exact ``steps``-point midpoint rule (per-cell completeness holds to quadrature error); above
        it, each cell gets ``max(1, budget // cells)`` stratified random points (seeded): the group means stay
        unbiased and completeness holds on average (``attrs['check']`` reports both sides). ``None``: always
        the exact rule.
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
    plan, notes = _plan(store, mods, group, ref, int(max_cells), rng)
    total, done = sum(a.size + r.size for a, r in plan.values()), [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0] / total, f"attribution: {done[0]} of {total} cells")

    frames, checks = [], {}
    model.net.eval()
    for m, (a, r) in plan.items():
        patch, feature, checks[m] = _modality_attribution(
            model, store, m, a, r, steps=int(steps), budget=budget, rng=rng, tick=tick
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
