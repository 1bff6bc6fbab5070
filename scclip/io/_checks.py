"""Input checks for :mod:`scclip.io`: modality names and inference, value checks, counts, assembling a MuData.

:func:`check_modality_data` validates one modality (used by the readers and by in-memory AnnData in
:mod:`scclip.api`); the private helpers bring every modality to the common layout (float32 CSR raw counts)
and build the MuData the readers return.
"""

from __future__ import annotations

import logging
import re

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclip._constants import MODALITIES
from scclip.errors import ScclipError
from scclip.genome import genome_alias

logger = logging.getLogger("scclip.io")  # the readers' logger: messages keep their scclip.io name

MODALITY_ALIASES = {
    "rna": {"rna", "gex", "gene expression", "expression", "scrna", "rna seq", "mrna", "transcriptome"},
    "atac": {
        "atac",
        "peaks",
        "peak",
        "chromatin accessibility",
        "accessibility",
        "chromatin",
        "scatac",
        "atac seq",
    },
}
_SEP = r"(?:\s*[:_-]\s*|\s+)"
#: feature names that look like peaks: ``chr1:100-200``, ``chr1-100-200``, ``chr1_100_200``, ``chr1:100:200``,
#: ``chr1 100 200``, with or without ``chr``, in any case, spaces around the parts, thousands separators
PEAK_RE = rf"^\s*(?:chr)?[A-Za-z0-9_.]+?{_SEP}[0-9][0-9,]*{_SEP}[0-9][0-9,]*\s*$"
COUNT_LAYERS = ("counts", "raw_counts", "count", "raw")


def canonical_modality(name: str) -> str | None:
    """``'Gene Expression'`` -> ``'rna'``, ``'Peaks'`` -> ``'atac'``; ``None`` when unknown."""
    key = re.sub(r"[\s_\-]+", " ", str(name).strip().lower())
    return next((mod for mod, names in MODALITY_ALIASES.items() if key in names), None)


def check_modality_name(modality: str | None) -> str | None:
    if modality is None:
        return None
    canon = canonical_modality(modality)
    if canon is None:
        msg = (
            f"Unknown modality {modality!r}: use 'rna' (gene expression) or 'atac' (chromatin accessibility)."
        )
        raise ScclipError(msg)
    return canon


def peak_fraction(names) -> float:
    names = pd.Index(names).astype(str)
    return float(names.str.match(PEAK_RE).mean()) if len(names) else 0.0


def modality_of_anndata(adata: ad.AnnData) -> str:
    """``'rna'`` or ``'atac'`` for an AnnData given without a modality name (the rules of file reading)."""
    mod, _ = infer_modality(adata)
    if mod is None:
        msg = "cannot tell whether this AnnData is RNA or ATAC; pass a MuData with modality 'rna' or 'atac'"
        raise ScclipError(msg)
    return mod


def unsupported_input(data) -> ScclipError:
    """The error for data of a type ``embed`` / ``train`` do not take."""
    msg = f"expected MuData, AnnData or {{'rna': AnnData, 'atac': AnnData}}, got {type(data).__name__}"
    return ScclipError(msg)


def infer_modality(adata: ad.AnnData) -> tuple[str | None, str]:
    """Guess the modality of a one-modality AnnData from ``var['feature_types']`` or the feature names."""
    if "feature_types" in adata.var:
        kinds = {canonical_modality(t) for t in pd.unique(adata.var["feature_types"].astype(str))}
        if len(kinds) == 1 and None not in kinds:
            kind = kinds.pop()
            return kind, f"var['feature_types'] says {kind}"
    frac = peak_fraction(adata.var_names)
    if frac >= 0.9:
        return "atac", f"{frac:.0%} of feature names look like peaks (chr:start-end)"
    if frac <= 0.1:
        return "rna", f"{1 - frac:.0%} of feature names look like genes, not peaks"
    return None, f"{frac:.0%} of feature names look like peaks (chr:start-end), the rest do not"


def non_integer(X) -> bool:
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    data = data[:1_000_000]
    return bool(data.size) and not np.allclose(data, np.round(data), atol=1e-6)


def to_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    else:
        X = sp.csr_matrix(np.asarray(X, dtype=np.float32))
    X.sum_duplicates()
    return X


def check_values(X, mod: str, source: str) -> None:
    """Refuse NaN / infinite values and negative counts (the message says what to do instead)."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    bad = ~np.isfinite(data)
    if bad.any():
        msg = (
            f"The {mod} matrix in {source} holds {int(bad.sum()):,} NaN or infinite values: scCLIP needs raw "
            "counts (or log-normalised values for RNA). Replace them (e.g. X[np.isnan(X)] = 0) or pass the "
            "raw counts (layers['counts'])."
        )
        raise ScclipError(msg)
    neg = data < 0
    if not neg.any():
        return
    sample = data[neg][:1_000_000]
    if mod == "rna" and not np.allclose(sample, np.round(sample), atol=1e-6):
        msg = (
            f"The RNA matrix in {source} has {int(neg.sum()):,} negative values: it looks scaled (z-scored, "
            "e.g. scanpy pp.scale), which cannot be turned back into expression. Pass raw counts "
            "(layers['counts']) or the log-normalised values (keep them in adata.raw before scaling)."
        )
    else:
        msg = (
            f"The {mod} matrix in {source} has {int(neg.sum()):,} negative values (e.g. {float(sample[0]):g}); "
            "counts cannot be negative. Pass the raw count matrix (layers['counts'] or the 10x .h5)."
        )
    raise ScclipError(msg)


def check_modality_data(adata: ad.AnnData, mod: str, source: str = "the data") -> None:
    """Check one modality before it is used: a matrix ``X``, cells and features, unique barcodes, unique
    feature names, finite non-negative values. Raises :class:`ScclipError` saying what is wrong and what to do.

    Parameters
    ----------
    adata
        One modality (``X`` cells x features).
    mod
        ``'rna'`` or ``'atac'``.
    source
        How to name the data in messages (a file name).
    """
    check_modality_meta(adata, mod, source)
    check_values(adata.X, mod, source)


def check_modality_meta(adata, mod: str, source: str = "the data") -> None:
    """:func:`check_modality_data` without reading the values of ``X`` (for files read in row chunks, whose
    values are checked chunk by chunk with :func:`check_values`).

    ``adata`` may be any object with ``X``, ``n_obs``, ``n_vars``, ``obs_names``, ``var_names`` and ``var``.
    """
    if adata.X is None:
        msg = (
            f"The {mod} AnnData in {source} has no matrix X. Store the raw counts in X "
            "(adata.X = adata.layers['counts']) and save the file again."
        )
        raise ScclipError(msg)
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"The {mod} matrix in {source} is empty ({adata.n_obs} cells x {adata.n_vars} features): check the file."
        raise ScclipError(msg)
    obs_names = pd.Index(adata.obs_names).astype(str)
    if not obs_names.is_unique:
        dup = obs_names[obs_names.duplicated()].unique()[:3].tolist()
        msg = (
            f"The {mod} cell barcodes in {source} are not unique (e.g. {dup}). If the file merges several "
            "samples, prefix each barcode with its sample name so that every cell has its own id."
        )
        raise ScclipError(msg)
    var_names = pd.Index(adata.var_names).astype(str)
    if not var_names.is_unique and not unique_gene_ids(adata, mod):
        dup = var_names[var_names.duplicated()].unique()
        what = "peak" if mod == "atac" else "gene"
        msg = (
            f"The {mod} feature names in {source} are not unique ({len(dup):,} {what} names occur more than "
            f"once, e.g. {dup[:3].tolist()}): each feature must occur once. Sum or drop the duplicated "
            "columns" + (", or add a unique var['gene_ids'] column" if mod == "rna" else "") + "."
        )
        raise ScclipError(msg)


def unique_gene_ids(adata: ad.AnnData, mod: str) -> bool:
    """RNA features with duplicate symbols are fine when a unique gene id tells them apart."""
    if mod != "rna":
        return False
    col = next((c for c in ("gene_ids", "gene_id", "ensembl_id") if c in adata.var), None)
    return col is not None and adata.var[col].astype(str).is_unique


def finish_modality(adata: ad.AnnData, mod: str, source: str, notes: list[str]) -> ad.AnnData:
    """Validate one modality and bring it to the common layout (str names, float32 CSR X)."""
    check_modality_data(adata, mod, source)
    adata.obs_names = adata.obs_names.astype(str)
    adata.var_names = adata.var_names.astype(str)
    if not adata.var_names.is_unique:  # RNA symbols told apart by unique gene ids
        adata.var_names_make_unique()
        notes.append(
            f"{mod}: duplicate gene symbols were made unique (suffixes -1, -2, ...); they match by gene id"
        )
    adata.X = to_csr(adata.X)
    if adata.X.nnz == 0:
        notes.append(f"{mod}: the matrix has no non-zero counts")
    return adata


def build_mudata(
    mods: dict[str, ad.AnnData], info: dict, global_obs: pd.DataFrame | None = None
) -> md.MuData:
    check_one_genome(mods, info.get("source", "the data"))
    for note in info.get("notes", []):
        logger.info("%s: %s", info.get("source", ""), note)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({m: mods[m] for m in MODALITIES if m in mods})
    if global_obs is not None and global_obs.index.is_unique:
        for col in global_obs.columns:
            mdata.obs[col] = global_obs[col].reindex(mdata.obs_names).to_numpy()
    mdata.uns["scclip_read"] = info
    genomes = {str(a.uns["genome"]) for a in mods.values() if "genome" in a.uns}
    if len(genomes) == 1:
        mdata.uns["genome"] = genomes.pop()
    return mdata


def split_by_type(
    adata: ad.AnnData, types, source: str, notes: list[str], modality: str | None = None
) -> dict[str, ad.AnnData]:
    """Split a mixed feature matrix by 10x feature types (``Gene Expression`` / ``Peaks``).

    With ``modality`` only that one is sliced out; it is an error when the file lacks it.
    """
    types = pd.Series(np.asarray(types).astype(str))
    canon = types.map(lambda t: canonical_modality(t) or "")
    mods, found = {}, []
    for mod in MODALITIES:
        mask = (canon == mod).to_numpy()
        if not mask.any():
            continue
        found.append(mod)
        if modality in (None, mod):
            mods[mod] = adata if mask.all() else _columns(adata, mask)
            used = ", ".join(sorted(types[mask].unique()))
            notes.append(f"{mod}: {int(mask.sum())} features of type {used}")
    other = sorted(types[canon == ""].unique())
    if other:
        notes.append(f"ignored features of type {', '.join(other)} (only gene expression and peaks are used)")
    if not found:
        msg = f"{source} has no gene expression or peak features (feature types found: {', '.join(other)})."
        raise ScclipError(msg)
    if modality is not None and modality not in mods:
        msg = f"{source} has no {modality} data (it holds: {', '.join(found)})."
        raise ScclipError(msg)
    return mods


def _columns(adata, mask: np.ndarray):
    """The features ``mask`` of one modality: a copy for AnnData; a file read in row chunks
    (:class:`scclip.io.Modality`) selects the columns of each chunk instead."""
    select = getattr(adata, "select_columns", None)
    return select(mask) if select is not None else adata[:, mask].copy()


def select_modalities(
    mods: dict[str, ad.AnnData], modality: str | None, source: str
) -> dict[str, ad.AnnData]:
    if modality is None:
        return mods
    if modality not in mods:
        msg = f"{source} has no {modality} data (it holds: {', '.join(mods) or 'nothing usable'})."
        raise ScclipError(msg)
    return {modality: mods[modality]}


def add_genome(adata: ad.AnnData, source: str = "the data") -> None:
    """Record the modality's assembly (``uns['genome']``) from ``var['genome']``; refuse features of two known
    assemblies in one modality (e.g. GRCh38 and mm10: scCLIP models one genome at a time)."""
    if "genome" in adata.var:
        values = adata.var["genome"].astype(str)
        genomes = pd.unique(values)
        known = {g: genome_alias(g) for g in genomes if genome_alias(g)}
        if len(set(known.values())) > 1:
            counts = values.map(known).value_counts()
            what = ", ".join(f"{g}: {n:,}" for g, n in counts.items())
            msg = (
                f"The features in {source} come from several assemblies ({what} features): scCLIP uses one genome "
                "per model. Keep the features of one species (e.g. adata[:, adata.var['genome'] == 'GRCh38'])."
            )
            raise ScclipError(msg)
        if len(genomes) == 1:
            adata.uns["genome"] = str(genomes[0])


def check_one_genome(mods: dict, source: str) -> None:
    """Refuse modalities declared on different known assemblies (RNA on hg38 with ATAC on mm10)."""
    declared = {m: str(a.uns["genome"]) for m, a in mods.items() if "genome" in getattr(a, "uns", {})}
    canon = {m: genome_alias(g) for m, g in declared.items() if genome_alias(g)}
    if len(set(canon.values())) > 1:
        what = " but ".join(f"{m} on {declared[m]}" for m in canon)
        msg = f"{source} declares {what}: both modalities must come from one genome; check that the files belong together."
        raise ScclipError(msg)


def has_negative(X) -> bool:
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    return bool(data.size) and bool(np.nanmin(data[:1_000_000]) < 0)


def use_counts(adata: ad.AnnData, notes: list[str]) -> ad.AnnData:
    """Use a raw-count layer when ``X`` holds normalised values and the file kept the counts.

    Without ``X`` a count layer is used; scaled ``X`` (negative values) falls back to ``.raw`` when that holds
    non-negative (log-normalised) values.
    """
    raw = adata.raw
    same = raw is not None and raw.n_vars == adata.n_vars and bool((raw.var_names == adata.var_names).all())
    layers = {k: adata.layers[k] for k in COUNT_LAYERS if k in adata.layers}
    choice, note = count_source(adata.X, layers, None if raw is None else raw.X, same)
    if note:
        notes.append(note if choice != "raw_var" else note.format(n=raw.n_vars))
    if choice.startswith("layer:"):
        adata.X = adata.layers[choice[len("layer:") :]]
    elif choice == "raw":
        adata.X = raw.X
    elif choice == "raw_var":
        return ad.AnnData(X=raw.X, obs=adata.obs, var=raw.var, uns=adata.uns)
    return adata


def count_source(X, layers: dict, raw_X, raw_same_vars: bool) -> tuple[str, str | None]:
    """Which stored matrix holds the raw counts (the rules of :func:`use_counts`).

    ``X``, the values of ``layers`` (count layers by name, in :data:`COUNT_LAYERS` order) and ``raw_X`` may be
    matrices or 1-d samples of their stored values (the first million are looked at); ``raw_X`` is ``None``
    without ``.raw``. Returns ``(choice, note)``: choice ``'X'``, ``'layer:NAME'``, ``'raw'`` (same features as
    X) or ``'raw_var'`` (``.raw`` with its own features; the note has a ``{n}`` for their number).
    """
    if X is None:
        for layer in COUNT_LAYERS:
            if layer in layers:
                return f"layer:{layer}", f"the file has no X; used layers['{layer}'] as counts"
        return "X", None  # check_modality_data says what to do
    if not non_integer(X):
        return "X", None
    for layer in COUNT_LAYERS:
        if layer in layers and not non_integer(layers[layer]):
            return f"layer:{layer}", f"X is not integer counts; used layers['{layer}'] as raw counts"
    if raw_X is not None and raw_same_vars and not non_integer(raw_X):
        return "raw", "X is not integer counts; used .raw.X as raw counts"
    if raw_X is not None and has_negative(X) and not has_negative(raw_X):
        return "raw_var", "X is scaled (negative values); used .raw ({n} features, log-normalised) instead"
    return "X", "X is not integer counts and no raw-count layer was found; X is used as it is"
