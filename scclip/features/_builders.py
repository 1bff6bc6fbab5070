"""Build a modality's features: from the training data, the bundled gene table or genome bins.

- :func:`features_from_anndata`: the training data's own genes / peaks (kind ``"own"``),
- :func:`gene_features`: every gene of the bundled gene table (kind ``"genes"``),
- :func:`bin_features`: fixed-width bins tiling the assembly (kind ``"bins"``),
- :func:`restrict_to_observed`: keep only the reference features the training data touch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scclip.errors import ScclipError
from scclip.features._modality import MODALITIES, ModalityFeatures
from scclip.features._var_coords import gene_coordinates, resolve_genome, var_intervals
from scclip.genome import (
    BUNDLED_GENOMES,
    check_intervals_in_genome,
    chrom_sizes,
    gene_table,
    genome_order,
    infer_genome,
    normalize_chroms,
)


def layout_kwargs(n_patches, patch_size, within_chromosome) -> dict:
    if n_patches is None and patch_size is None:
        raise ScclipError("give n_patches or patch_size to lay out the features in patches.")
    return {"n_patches": n_patches, "patch_size": patch_size, "within_chromosome": bool(within_chromosome)}


def features_from_anndata(
    adata,
    *,
    modality: str,
    genome: str | None = None,
    n_patches: int | None = None,
    patch_size: int | None = None,
    within_chromosome: bool = False,
) -> tuple[ModalityFeatures, dict]:
    """The training data's own features ("own" kind), sorted in natural genome order.

    ATAC coordinates come from var columns (chrom/start/end, chr/chromStart/chromEnd, or a 10x ``interval``)
    or are parsed from var_names. RNA coordinates come from a 10x ``interval`` column or var columns, else
    from the bundled gene table of ``genome`` (matched by gene id, then symbol exact-case, then
    case-insensitively). Genes without coordinates are kept and placed after all located genes, in their
    original order (chrom ``""``); the report counts them and names a few.

    Returns
    -------
    (features, report) with report keys n_features, with_coordinates, without_coordinates,
    missing_examples, coordinate_source (counts per source) and genome.
    """
    if modality not in MODALITIES:
        raise ScclipError(f"unknown modality {modality!r}; use 'rna' or 'atac'.")
    names = np.asarray(adata.var_names).astype(str)
    if len(names) == 0:
        raise ScclipError(f"the {modality} data have no features (var is empty).")
    dup = pd.Index(names).duplicated()
    if dup.any():
        msg = (
            f"{int(dup.sum())} {modality} feature names are duplicated (e.g. {names[dup][:3].tolist()}); "
            "make them unique first, e.g. adata.var_names_make_unique()."
        )
        raise ScclipError(msg)
    layout = layout_kwargs(n_patches, patch_size, within_chromosome)
    if modality == "atac":
        chrom, start, end, src = var_intervals(adata)
        ids, sources = None, {src: len(names)}
        genome, warnings = resolve_genome(adata, genome)
        genome = genome or infer_genome(chrom, ends=end)
        if genome in BUNDLED_GENOMES:
            warnings += check_intervals_in_genome(chrom, start, end, genome)
    else:
        chrom, start, end, ids, sources, warnings, genome = gene_coordinates(adata, genome=genome)
    located = chrom != ""
    order = np.r_[
        np.flatnonzero(located)[genome_order(chrom[located], start[located])], np.flatnonzero(~located)
    ]
    feats = ModalityFeatures(
        modality=modality,
        names=names[order],
        chrom=chrom[order],
        start=start[order],
        end=end[order],
        ids=None if ids is None else ids[order],
        kind="own",
        genome=genome,
        **layout,
    )
    report = {
        "modality": modality,
        "n_features": len(names),
        "with_coordinates": int(located.sum()),
        "without_coordinates": int((~located).sum()),
        "missing_examples": names[~located][:5].tolist(),
        "coordinate_source": sources,
        "genome": feats.genome,
        "n_patches": int(feats.n_patches),
        "patch_size": int(feats.patch_size),
        "warnings": warnings,
    }
    return feats, report


def gene_features(
    genome: str,
    *,
    n_patches: int | None = None,
    patch_size: int | None = None,
    within_chromosome: bool = False,
) -> ModalityFeatures:
    """Every gene of the bundled gene table of ``genome`` (kind ``"genes"``), in genome order."""
    table = gene_table(genome)
    ids = table["gene_id"].to_numpy().astype(str)
    return ModalityFeatures(
        modality="rna",
        names=table["gene_name"].to_numpy(),
        chrom=table["chrom"].to_numpy(),
        start=table["start"].to_numpy(),
        end=table["end"].to_numpy(),
        ids=ids if (ids != "").any() else None,
        kind="genes",
        genome=genome,
        **layout_kwargs(n_patches, patch_size, within_chromosome),
    )


def genome_bins(sizes: dict[str, int], bin_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bins tiling each chromosome: (names, chrom, start, end), vectorised."""
    chroms = list(sizes)
    size = np.array([sizes[c] for c in chroms], dtype=np.int64)
    counts = -(-size // bin_size)
    chrom_idx = np.repeat(np.arange(len(chroms)), counts)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    k = np.arange(int(counts.sum()), dtype=np.int64) - first[chrom_idx]
    start = k * bin_size
    end = np.minimum(start + bin_size, size[chrom_idx])
    chrom = np.asarray(chroms, dtype=str)[chrom_idx]
    # bin k of a chromosome ends where bin k + 1 starts: convert each boundary to text once
    bounds = np.insert(start, np.r_[first[1:], len(start)], size)  # per chromosome: 0, bs, ..., size
    text = pd.Series(bounds).astype(str).to_numpy(dtype=object)
    pos = np.arange(len(start)) + chrom_idx  # index of each bin's start among the boundaries
    prefix = np.asarray([c + ":" for c in chroms], dtype=object)[chrom_idx]
    names = prefix + text[pos] + "-" + text[pos + 1]
    return names.astype(str), chrom, start, end


def bin_features(
    genome: str,
    *,
    bin_size: int,
    chromosomes: list[str] | None = None,
    n_patches: int | None = None,
    patch_size: int | None = None,
    within_chromosome: bool = False,
    sizes: dict[str, int] | None = None,
) -> ModalityFeatures:
    """Fixed-width bins ``[k * bin_size, (k + 1) * bin_size)`` over the assembly's chromosomes (kind ``"bins"``).

    Names look like ``chr1:0-5000``; the last bin of a chromosome ends at the chromosome's end.
    ``chromosomes`` restricts (and is kept in natural order); ``sizes`` overrides the bundled sizes (used when
    loading a saved model).
    """
    if int(bin_size) < 1:
        raise ScclipError(f"bin_size must be a positive number of base pairs (got {bin_size}).")
    all_sizes = dict(sizes) if sizes is not None else chrom_sizes(genome)
    if chromosomes is not None:
        wanted = normalize_chroms(chromosomes).tolist()
        unknown = [c for c in wanted if c not in all_sizes]
        if unknown:
            msg = f"chromosomes {unknown[:5]} are not in {genome}; choose among {list(all_sizes)}."
            raise ScclipError(msg)
        all_sizes = {c: n for c, n in all_sizes.items() if c in set(wanted)}
    names, chrom, start, end = genome_bins(all_sizes, int(bin_size))
    return ModalityFeatures(
        modality="atac",
        names=names,
        chrom=chrom,
        start=start,
        end=end,
        kind="bins",
        bin_size=int(bin_size),
        genome=genome,
        chromosomes=list(all_sizes),
        **layout_kwargs(n_patches, patch_size, within_chromosome),
    )


def restrict_to_observed(feats: ModalityFeatures, hit: np.ndarray) -> ModalityFeatures:
    """Keep the reference features marked in ``hit`` (bool per feature), in order, with a fresh patch layout.

    Used for reference feature spaces (gene table, genome bins): a feature that no training cell touches would
    carry a zero (frozen SVD) embedding, so dropping it loses nothing and keeps the model small. Query features
    outside the kept set are reported as unmapped by :func:`scclip.features.align_features`.
    """
    hit = np.asarray(hit, dtype=bool)
    if hit.shape != (feats.n_features,):
        msg = f"hit must have one entry per feature ({feats.n_features}), got shape {hit.shape}"
        raise ScclipError(msg)
    if not hit.any():
        msg = f"no {feats.modality} reference feature is observed in the training data; check the genome"
        raise ScclipError(msg)
    return ModalityFeatures(
        modality=feats.modality,
        names=feats.names[hit],
        chrom=feats.chrom[hit],
        start=feats.start[hit],
        end=feats.end[hit],
        ids=None if feats.ids is None else feats.ids[hit],
        kind=feats.kind,
        bin_size=feats.bin_size,
        n_patches=feats.n_patches,
        within_chromosome=feats.within_chromosome,
        genome=feats.genome,
        chromosomes=feats.chromosomes,
        observed_only=True,
    )
