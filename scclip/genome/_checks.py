"""Checks that a dataset's coordinates and declared assembly fit a genome, and inferring the assembly.

A dataset's declared assembly
(``uns['genome']``, ``var['genome']``, an argument) against a model's, intervals against the bundled chromosome
sizes, and the assembly guessed from chromosome names, interval ends or gene symbols.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from scclip.errors import GenomeMismatchError, ScclipError
from scclip.genome._assembly import (
    BUNDLED_GENOMES,
    SPECIES,
    bundled_genome,
    cached_gene_table,
    chrom_sizes,
    genome_alias,
    is_primary_chrom,
    normalize_chroms,
)


def declared_genomes(adata, *, genome: str | None = None) -> list[tuple[str, str]]:
    """The assemblies a dataset declares: (source, value) from the argument, ``uns['genome']``, ``var['genome']``."""
    out: list[tuple[str, str]] = []
    if genome is not None:
        out.append(("the genome argument", str(genome)))
    uns_g = getattr(adata, "uns", {}).get("genome") if hasattr(adata, "uns") else None
    if isinstance(uns_g, str | np.str_):
        out.append(("adata.uns['genome']", str(uns_g)))
    var = getattr(adata, "var", None)
    if var is not None and "genome" in var.columns:
        for value in pd.unique(var["genome"].astype(str)):
            if value and value.lower() not in ("nan", "none", ""):
                out.append(("var['genome']", value))
    return out


def check_declared_genome(adata, model_genome: str | None, *, genome: str | None = None) -> list[str]:
    """Raise :class:`GenomeMismatchError` when a declared assembly differs from ``model_genome``.

    Returns warnings (unrecognised declarations, several assemblies in ``var['genome']``).
    """
    warnings: list[str] = []
    if genome is not None and genome_alias(genome) is None:
        msg = f"unknown genome {genome!r}: pass an assembly name such as 'mm10' (GRCm38) or 'hg38' (GRCh38)."
        raise ScclipError(msg)
    model = genome_alias(model_genome)
    declared = declared_genomes(adata, genome=genome)
    var_values = {v for s, v in declared if s == "var['genome']"}
    for source, value in declared:
        canon = genome_alias(value)
        if canon is None:
            warnings.append(f"{source} = {value!r} is not a known assembly name; it was not checked.")
        elif model is not None and canon != model:
            if (
                source == "var['genome']"
                and len(var_values) > 1
                and any(genome_alias(v) == model for v in var_values)
            ):
                warnings.append(f"var['genome'] lists several assemblies ({sorted(var_values)}).")
                continue
            raise GenomeMismatchError(_mismatch_message(source, value, canon, model))
    return warnings


def _mismatch_message(source: str, value: str, canon: str, model: str) -> str:
    """Another species: say so plainly (no liftOver turns human genes into mouse genes); the same species on
    another assembly: remapping the coordinates is an option."""
    data_sp, model_sp = SPECIES.get(canon), SPECIES.get(model)
    head = f"genome mismatch: {source} declares {value!r} ({canon}) but the model's features are on {model}"
    if data_sp and model_sp and data_sp != model_sp:
        return (
            f"{head}: the data are {data_sp} and the model is {model_sp}. A model embeds only cells of the species "
            f"it was trained on: train a model on these data (scclip train --feature-space {canon}, or the app's "
            f"Train page), or use a {data_sp} model."
        )
    return f"{head}; use a model trained on {canon}, or remap the data to {model} (e.g. with liftOver)."


def substantial(n: int, total: int) -> bool:
    """True when ``n`` of ``total`` features is more than a stray few: > 1 % and at least 10."""
    return n >= 10 and n > 0.01 * total


def check_intervals_in_genome(
    chrom: np.ndarray, start: np.ndarray, end: np.ndarray, genome: str
) -> list[str]:
    """Refuse intervals that cannot come from ``genome``; return warnings for stray ones.

    Evidence of a wrong assembly (raises :class:`GenomeMismatchError`): a substantial share (see
    :func:`substantial`) of the intervals on primary chromosomes the assembly lacks (chr20 on mouse), or
    ending past the chromosome's end.
    """
    sizes = chrom_sizes(genome)
    canon = bundled_genome(genome)
    chrom = np.asarray(chrom).astype(str)
    end = np.asarray(end, dtype=np.int64)
    total = len(chrom)
    warnings: list[str] = []
    codes, uniq = pd.factorize(chrom)
    counts = np.bincount(codes, minlength=len(uniq))
    lacking = {c: int(n) for c, n in zip(uniq, counts, strict=True) if c and c not in sizes}
    primary = {c: n for c, n in lacking.items() if is_primary_chrom(c)}
    n_primary = sum(primary.values())
    if substantial(n_primary, total):
        shown = ", ".join(f"{c} ({n})" for c, n in sorted(primary.items(), key=lambda kv: -kv[1])[:5])
        msg = (
            f"genome mismatch: {n_primary} of {total} intervals lie on chromosomes that {canon} does not "
            f"have ({shown}); the data are from another assembly or species. Use a model trained on "
            "the data's genome."
        )
        raise GenomeMismatchError(msg)
    if lacking:
        shown = ", ".join(sorted(lacking)[:5])
        warnings.append(
            f"{sum(lacking.values())} intervals on contigs not in {canon} ({shown}) stay unmapped."
        )
    size_arr = np.array([sizes.get(c, np.iinfo(np.int64).max) for c in uniq], dtype=np.int64)
    past = end > size_arr[codes]
    n_past = int(past.sum())
    if substantial(n_past, total):
        ex = ", ".join(
            f"{c}:{s}-{e}"
            for c, s, e in zip(chrom[past][:3], np.asarray(start)[past][:3], end[past][:3], strict=True)
        )
        msg = (
            f"genome mismatch: {n_past} of {total} intervals end past the end of their chromosome in "
            f"{canon} (e.g. {ex}); the coordinates are from another assembly. Use a model trained on the "
            "data's genome, or remap the coordinates."
        )
        raise GenomeMismatchError(msg)
    if n_past:
        warnings.append(f"{n_past} intervals end past their chromosome's end in {canon}.")
    return warnings


def infer_genome(
    chroms: Sequence[str] | np.ndarray | None = None,
    gene_names: Sequence[str] | np.ndarray | None = None,
    *,
    ends: Sequence[int] | np.ndarray | None = None,
) -> str | None:
    """Guess the bundled assembly from chromosome names (and interval ends) or gene symbols; None if unsure.

    Chromosome evidence rules out an assembly when a substantial share of the intervals lie on primary
    chromosomes it lacks or (with ``ends``) past its chromosome ends. Gene evidence picks the assembly whose
    table matches at least twice as many symbols exactly (case-sensitive), with at least 5 matches (or half
    the names, for short lists).
    """
    candidates = list(BUNDLED_GENOMES)
    if chroms is not None and len(chroms):
        chrom = normalize_chroms(chroms)
        end = np.zeros(len(chrom), dtype=np.int64) if ends is None else np.asarray(ends, dtype=np.int64)
        kept = []
        for g in candidates:
            try:
                check_intervals_in_genome(chrom, end, end, g)
            except GenomeMismatchError:
                continue
            kept.append(g)
        candidates = kept
        if len(candidates) == 1:
            return candidates[0]
    if gene_names is not None and len(gene_names) and candidates:
        names = pd.Index(np.asarray(gene_names).astype(str))
        hits = {g: int(names.isin(cached_gene_table(g)["gene_name"]).sum()) for g in candidates}
        best = max(hits, key=hits.get)
        others = max([v for g, v in hits.items() if g != best], default=0)
        if hits[best] >= min(5, math.ceil(len(names) / 2)) and hits[best] >= 2 * others:
            return best
    return None
