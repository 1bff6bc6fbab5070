"""One-call evaluation of a joint RNA/ATAC embedding stored in a MuData object."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scclip import metrics
from scclip.errors import ScclipError

#: Temperature of the NeurIPS 2021 match-probability score reported for every model.
MATCH_TEMPERATURE = 0.05
#: Metrics that need cell-type labels.
LABEL_METRICS = ("asw_cell_type", "asw_cell_type_rna", "asw_cell_type_atac", "label_transfer_accuracy")
#: Paired metrics after the matching-time Sinkhorn normalisation (``sinkhorn=True``): a separate score, not the
#: embedding's own.
SINKHORN_METRICS = ("foscttm_sinkhorn", "top1_sinkhorn", "top5_sinkhorn")
#: Entropic regularisation of that normalisation (fixed a priori, at the match-probability temperature).
SINKHORN_EPS = 0.05


def _float(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _modality(mdata, name: str):
    mods = getattr(mdata, "mod", None)
    if mods is None or name not in mods:
        have = sorted(mods) if mods is not None else []
        msg = f"the MuData object has no '{name}' modality (it has {have}); load paired RNA + ATAC data as mdata['rna'] and mdata['atac']."
        raise ScclipError(msg)
    return mods[name]


def _embedding(adata, name: str, key: str) -> np.ndarray:
    if key not in adata.obsm:
        msg = f"mdata['{name}'].obsm has no '{key}' (it has {sorted(adata.obsm)}); embed the cells first (e.g. `scclip embed`) or pass key=."
        raise ScclipError(msg)
    return np.asarray(adata.obsm[key])


def _labels(mdata, adata, label_key: str) -> np.ndarray | None:
    if label_key in adata.obs:
        return adata.obs[label_key].to_numpy(dtype=object)
    if label_key in mdata.obs:
        return mdata.obs[label_key].reindex(adata.obs_names).to_numpy(dtype=object)
    return None


def _align(rna_names: pd.Index, atac_names: pd.Index) -> tuple[np.ndarray | None, str | None]:
    """Positions of the RNA cells in the ATAC object, or ``(None, reason)`` when the cells are not paired."""
    if not rna_names.is_unique or not atac_names.is_unique:
        return (
            None,
            "obs_names are not unique within a modality, so RNA and ATAC cells cannot be paired by name",
        )
    shared = rna_names.intersection(atac_names)
    if len(shared) != len(rna_names) or len(shared) != len(atac_names):
        return None, (
            f"RNA ({len(rna_names)} cells) and ATAC ({len(atac_names)} cells) share {len(shared)} obs_names; "
            "pairing metrics need the same cells in both modalities (subset both to the shared cells)"
        )
    return atac_names.get_indexer(rna_names), None


def evaluate_embeddings(
    rna_emb,
    atac_emb,
    *,
    paired: bool = True,
    rna_labels=None,
    atac_labels=None,
    k_mixing: int = 30,
    temperature: float | None = None,
    chunk_size: int | None = None,
    reasons: dict[str, str] | None = None,
    sinkhorn: bool = False,
) -> dict:
    """All metrics of :func:`evaluate` from arrays (row ``i`` of both embeddings is one cell when ``paired``).

    ``reasons`` pre-fills the explanations of metrics that cannot be computed (used by :func:`evaluate`).
    ``sinkhorn`` adds ``foscttm_sinkhorn``, ``top1_sinkhorn``, ``top5_sinkhorn``: the paired metrics after the
    matching-time Sinkhorn normalisation of the similarities (:func:`scclip.match.sinkhorn_bias`).
    """
    rna = metrics.as_embedding(rna_emb, name="rna_emb")
    atac = metrics.as_embedding(atac_emb, name="atac_emb")
    why = dict(reasons or {})
    res: dict = {
        "foscttm": None,
        "top1": None,
        "top5": None,
        "match_probability": None,
        "asw_cell_type": None,
        "asw_cell_type_rna": None,
        "asw_cell_type_atac": None,
        "mixing_entropy": None,
        "label_transfer_accuracy": None,
        "directions": {},
        "n_cells": {"rna": int(rna.shape[0]), "atac": int(atac.shape[0]), "paired": 0},
    }
    if temperature is not None:
        res["match_probability_learned_T"] = None
        res["temperature"] = _float(temperature)
    pair_keys = ["foscttm", "top1", "top5", "match_probability"] + (
        ["match_probability_learned_T"] if temperature is not None else []
    )
    if sinkhorn:
        res.update(dict.fromkeys(SINKHORN_METRICS))
        pair_keys += list(SINKHORN_METRICS)
    if paired:
        _paired_metrics(res, why, rna, atac, pair_keys, temperature=temperature, chunk_size=chunk_size)
        if sinkhorn:
            _sinkhorn_metrics(res, why, rna, atac, chunk_size=chunk_size)
    else:
        for name in pair_keys:
            why.setdefault(name, "the RNA and ATAC cells are not paired")

    try:
        res["mixing_entropy"] = _float(metrics.modality_mixing(rna, atac, k=k_mixing, chunk_size=chunk_size))
    except ScclipError as err:
        why["mixing_entropy"] = str(err)

    _label_metrics(res, why, rna, atac, rna_labels, atac_labels, chunk_size=chunk_size)
    res["reasons"] = {k: v for k, v in why.items() if res.get(k) is None}
    return res


def _paired_metrics(res: dict, why: dict, rna, atac, pair_keys, *, temperature, chunk_size) -> None:
    """FOSCTTM, top-1 / top-5 and match probability (fixed and learned temperature) into ``res``."""
    try:
        temps = (MATCH_TEMPERATURE,) + ((float(temperature),) if temperature is not None else ())
        pm = metrics.paired_metrics(rna, atac, ks=(1, 5), temperatures=temps, chunk_size=chunk_size)
    except ScclipError as err:
        why.update(dict.fromkeys(pair_keys, str(err)))
    else:
        res["n_cells"]["paired"] = int(rna.shape[0])
        named = {"foscttm": pm["foscttm"], "top1": pm["top1"], "top5": pm["top5"]}
        named["match_probability"] = pm[f"match_probability@{MATCH_TEMPERATURE:g}"]
        if temperature is not None:
            named["match_probability_learned_T"] = pm[f"match_probability@{float(temperature):g}"]
        for name, summary in named.items():
            res[name] = _float(summary["mean"])
            res["directions"][name] = {d: _float(summary[d]) for d in ("rna_to_atac", "atac_to_rna")}


def _sinkhorn_metrics(res: dict, why: dict, rna, atac, *, chunk_size) -> None:
    """FOSCTTM and top-1 / top-5 with candidates ranked by the Sinkhorn plan instead of the raw cosine."""
    from scclip.match import sinkhorn_bias

    try:
        bias = sinkhorn_bias(rna, atac, eps=SINKHORN_EPS, chunk_size=chunk_size)
        pm = metrics.paired_metrics(rna, atac, ks=(1, 5), temperatures=(), chunk_size=chunk_size,
                                    candidate_bias=bias)  # fmt: skip
    except ScclipError as err:
        why.update(dict.fromkeys(SINKHORN_METRICS, str(err)))
        return
    for name, summary in (("foscttm", pm["foscttm"]), ("top1", pm["top1"]), ("top5", pm["top5"])):
        res[f"{name}_sinkhorn"] = _float(summary["mean"])
        res["directions"][f"{name}_sinkhorn"] = {d: _float(summary[d]) for d in ("rna_to_atac", "atac_to_rna")}


def _label_metrics(res: dict, why: dict, rna, atac, rna_labels, atac_labels, *, chunk_size) -> None:
    """Cell-type ASW (over both modalities and within each) and label transfer into ``res`` (``why`` says why a
    metric is missing)."""
    if rna_labels is None or atac_labels is None:
        for name in LABEL_METRICS:
            why.setdefault(
                name, "no cell-type labels (pass label_key= naming an obs column present in both modalities)"
            )
    else:
        try:
            emb = np.concatenate([rna.numpy(), atac.numpy()])
            lab = np.concatenate(
                [np.asarray(rna_labels, dtype=object), np.asarray(atac_labels, dtype=object)]
            )
            res["asw_cell_type"] = _float(metrics.celltype_asw(emb, lab))
        except ScclipError as err:
            why["asw_cell_type"] = str(err)
        # within one modality's cells: blind to the distance between the modalities (a modality gap also moves
        # the ASW over both, see docs/modality_gap.md)
        for name, x, x_lab in (("rna", rna, rna_labels), ("atac", atac, atac_labels)):
            try:
                res[f"asw_cell_type_{name}"] = _float(metrics.celltype_asw(x.numpy(), x_lab))
            except ScclipError as err:
                why[f"asw_cell_type_{name}"] = str(err)
        try:
            acc = metrics.label_transfer_accuracy(
                rna, rna_labels, atac, atac_labels, k=15, chunk_size=chunk_size
            )
            res["label_transfer_accuracy"] = _float(acc)
        except ScclipError as err:
            why["label_transfer_accuracy"] = str(err)


def evaluate(
    mdata,
    *,
    key: str = "X_scclip",
    label_key: str | None = None,
    k_mixing: int = 30,
    temperature: float | None = None,
    chunk_size: int | None = None,
    raw: bool = True,
    sinkhorn: bool = False,
) -> dict:
    """Evaluate the joint embedding ``mdata['rna'].obsm[key]`` / ``mdata['atac'].obsm[key]``.

    Parameters
    ----------
    mdata
        MuData with modalities ``rna`` and ``atac``, both holding ``obsm[key]`` in the same space.
    key
        obsm key of the embedding.
    label_key
        obs column with cell types (looked up in each modality's obs, then in ``mdata.obs``).
    k_mixing
        Neighbours for the modality-mixing entropy.
    temperature
        The model's learned softmax temperature; adds ``match_probability_learned_T``.
    raw
        Also score ``obsm[key + '_raw']`` when present (``raw`` in the result); ``False`` skips that work.
    sinkhorn
        Also report ``foscttm_sinkhorn``, ``top1_sinkhorn``, ``top5_sinkhorn``: matching after a Sinkhorn
        (doubly-stochastic) normalisation of the similarities, a matching-time method scored separately.

    Returns
    -------
    JSON-safe dict: ``foscttm``, ``top1``, ``top5`` (means of both directions), ``match_probability`` (at
    T = 0.05), ``match_probability_learned_T`` (when ``temperature`` is given), ``asw_cell_type`` (over both
    modalities' cells), ``asw_cell_type_rna`` / ``asw_cell_type_atac`` (within one modality's cells: blind to a
    modality gap, which also moves ``asw_cell_type``), ``mixing_entropy`` (log2, 1 = perfect), ``label_transfer_accuracy`` (RNA -> ATAC, k = 15), ``directions``
    (per-direction values of the paired metrics), ``n_cells`` (``{"rna", "atac", "paired"}``) and ``reasons``
    (metric -> why it is ``None``), and ``raw`` (FOSCTTM, top-1/5, mixing and the label metrics of
    ``obsm[key + '_raw']``, the embedding before the modality-gap correction, when present). Pairing metrics need both modalities to hold the same set of obs_names (any
    order; they are aligned by name); label metrics need ``label_key``.
    """
    rna_ad, atac_ad = _modality(mdata, "rna"), _modality(mdata, "atac")
    rna_emb = _embedding(rna_ad, "rna", key)
    atac_emb = _embedding(atac_ad, "atac", key)
    order, why_unpaired = _align(pd.Index(rna_ad.obs_names), pd.Index(atac_ad.obs_names))
    rna_lab = atac_lab = None
    reasons: dict[str, str] = {}
    if label_key is not None:
        rna_lab = _labels(mdata, rna_ad, label_key)
        atac_lab = _labels(mdata, atac_ad, label_key)
        if rna_lab is None or atac_lab is None:
            where = "mdata['rna'].obs" if rna_lab is None else "mdata['atac'].obs"
            why = f"label_key '{label_key}' is not a column of {where} or mdata.obs"
            reasons = dict.fromkeys(LABEL_METRICS, why)
            rna_lab = atac_lab = None
    if order is not None:
        atac_emb = atac_emb[order]
        atac_lab = None if atac_lab is None else atac_lab[order]
    else:
        reasons.update(
            dict.fromkeys(
                ["foscttm", "top1", "top5", "match_probability", "match_probability_learned_T"], why_unpaired
            )
        )
    common = dict(
        paired=order is not None,
        rna_labels=rna_lab,
        atac_labels=atac_lab,
        k_mixing=k_mixing,
        chunk_size=chunk_size,
    )
    res = evaluate_embeddings(
        rna_emb, atac_emb, temperature=temperature, reasons=reasons, sinkhorn=sinkhorn, **common
    )
    raw_key = f"{key}_raw"
    if raw and raw_key in rna_ad.obsm and raw_key in atac_ad.obsm:
        # the same cells before the modality-gap correction (scclip.gap), for comparison
        raw_r, raw_a = np.asarray(rna_ad.obsm[raw_key]), np.asarray(atac_ad.obsm[raw_key])
        if order is not None:
            raw_a = raw_a[order]
        before = evaluate_embeddings(raw_r, raw_a, **common)
        res["raw"] = {k: before[k] for k in ("foscttm", "top1", "top5", "mixing_entropy", *LABEL_METRICS)}
        res["raw"]["key"] = raw_key
    return res
