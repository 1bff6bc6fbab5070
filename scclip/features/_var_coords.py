"""Read what ``AnnData.var`` says about each feature: coordinates, gene ids, gene symbols and the genome.

- :func:`var_intervals`: (chrom, start, end) from var columns (chrom/start/end, chr/chromStart/chromEnd,
  seqnames/start/end), a 10x ``interval`` column, or peak-like var_names (``chr1:100-200``).
- :func:`var_gene_ids` / :func:`var_gene_symbols`: Ensembl-style ids and symbols, whichever way the file
  stores them.
- :func:`resolve_genome`: the assembly declared by the user and / or the data, checked for agreement.
- :func:`gene_coordinates`: RNA coordinates from var, completed from the bundled gene table.

These readers are shared by :mod:`scclip.features` (building a model's features) and the alignment (``_align``)
(mapping query data onto them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scclip.errors import ScclipError
from scclip.genome import (
    BUNDLED_GENOMES,
    MATCH_NAMES,
    SPECIES,
    check_casefold,
    check_declared_genome,
    check_ensembl_species,
    declared_genomes,
    ensembl_species,
    gene_table,
    genome_alias,
    infer_genome,
    looks_like_ensembl,
    match_genes,
    normalize_chroms,
    parse_intervals,
)

_COORD_COLUMNS = (("chrom", "start", "end"), ("chr", "chromStart", "chromEnd"), ("seqnames", "start", "end"))
_ID_COLUMNS = ("gene_ids", "gene_id", "id")
_SYMBOL_COLUMNS = ("gene_symbols", "gene_symbol", "gene_name", "gene_names", "symbol", "feature_name")
_NA = ("", "nan", "na", "none", "<na>")


def var_intervals(adata, *, errors: str = "raise", from_names: bool = True):
    """Coordinates of each var row: (chrom, start, end, source).

    Looks for var columns chrom/start/end, chr/chromStart/chromEnd, seqnames/start/end, then a 10x
    ``interval`` column ("chr1:10-20"), then (``from_names``) parses var_names. With ``errors="coerce"``
    rows without coordinates get chrom ``""``; with ``"raise"`` they raise :class:`ScclipError`.
    """
    var = adata.var
    n = var.shape[0]
    for cols in _COORD_COLUMNS:
        if all(c in var.columns for c in cols):
            chrom = var[cols[0]].astype(str).str.strip().to_numpy()
            start = pd.to_numeric(var[cols[1]], errors="coerce").to_numpy(dtype=float)
            end = pd.to_numeric(var[cols[2]], errors="coerce").to_numpy(dtype=float)
            ok = ~np.isin(np.char.lower(chrom.astype(str)), _NA) & ~np.isnan(start) & ~np.isnan(end)
            ok[ok] &= (end[ok] >= start[ok]) & (start[ok] >= 0)
            if errors == "raise" and not ok.all():
                bad = np.asarray(var.index)[~ok][:5].tolist()
                msg = f"{int((~ok).sum())} features lack valid var[{list(cols)}] coordinates (e.g. {bad}); fix or drop them."
                raise ScclipError(msg)
            chrom_out = np.where(ok, normalize_chroms(np.where(ok, chrom, "")), "")
            start_out = np.where(ok, np.nan_to_num(start), 0).astype(np.int64)
            end_out = np.where(ok, np.nan_to_num(end), 0).astype(np.int64)
            return chrom_out.astype(str), start_out, end_out, f"var{list(cols)}"
    if "interval" in var.columns:
        return (
            *parse_intervals(var["interval"].astype(str).to_numpy(), what="var['interval']", errors=errors),
            "var['interval']",
        )
    if from_names:
        return (*parse_intervals(np.asarray(var.index).astype(str), errors=errors), "var_names")
    empty = np.full(n, "", dtype=str)
    return empty, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), "none"


def var_gene_ids(adata) -> np.ndarray | None:
    """Gene ids: var column gene_ids / gene_id / id, or var_names when they look like Ensembl ids; else None."""
    for col in _ID_COLUMNS:
        if col in adata.var.columns:
            ids = adata.var[col].astype(str).to_numpy().astype(str)
            return np.where(np.isin(np.char.lower(ids), _NA), "", ids).astype(str)
    names = np.asarray(adata.var_names).astype(str)
    if len(names) and looks_like_ensembl(names).mean() > 0.5:
        return names
    return None


def var_gene_symbols(adata) -> np.ndarray:
    """Gene symbols: var_names, or a symbol column (gene_symbols, gene_name, ...) when var_names are Ensembl ids."""
    names = np.asarray(adata.var_names).astype(str)
    if len(names) and looks_like_ensembl(names).mean() > 0.5:
        for col in _SYMBOL_COLUMNS:
            if col in adata.var.columns:
                return adata.var[col].astype(str).to_numpy().astype(str)
    return names


def resolve_genome(adata, genome: str | None) -> tuple[str | None, list[str]]:
    """The data's assembly: ``genome`` checked against the data's declarations, else the first declared one."""
    warnings = check_declared_genome(adata, genome)
    canon = genome_alias(genome) if genome else None
    if canon is None:
        declared = [genome_alias(v) for _, v in declared_genomes(adata)]
        canon = next((g for g in declared if g is not None), None)
    return canon, warnings


def gene_coordinates(adata, *, genome: str | None = None):
    """RNA coordinates: (chrom, start, end, ids, sources, warnings, genome); see :func:`features_from_anndata`."""
    ids, symbols = var_gene_ids(adata), var_gene_symbols(adata)
    genome, warnings = resolve_genome(adata, genome)
    chrom, start, end, src = var_intervals(adata, errors="coerce", from_names=False)
    chrom = chrom.astype(object)  # filled from the gene table below: no fixed-width truncation
    located = chrom != ""
    sources = {src: int(located.sum())} if located.any() else {}
    if located.all():  # coordinates from var; still record the assembly when the data tell it
        genome = genome or infer_genome(chrom.astype(str), gene_names=symbols, ends=end)
        return chrom.astype(str), start, end, ids, sources, warnings, genome
    if genome is None and ids is not None:
        species = ensembl_species(ids)[0]
        genome = {v: k for k, v in SPECIES.items() if k in BUNDLED_GENOMES}.get(species)
    genome = genome or infer_genome(gene_names=symbols)
    if genome not in BUNDLED_GENOMES:
        if not located.any():
            msg = (
                f"cannot place the genes on the genome: no var coordinates and no bundled gene table for "
                f"genome {genome!r}; pass genome='mm10' or 'hg38', or add var columns chrom/start/end."
            )
            raise ScclipError(msg)
        warnings.append(
            f"{int((~located).sum())} genes without coordinates (no bundled table for {genome!r})."
        )
        return chrom.astype(str), start, end, ids, sources, warnings, genome
    check_ensembl_species(ids, genome)
    table = gene_table(genome)
    todo = np.flatnonzero(~located)
    idx, how = match_genes(
        None if ids is None else ids[todo],
        symbols[todo],
        table["gene_id"].to_numpy().astype(str),
        table["gene_name"].to_numpy().astype(str),
    )
    check_casefold(how, genome, examples=symbols[todo][how == 3])
    hit = idx >= 0
    chrom[todo[hit]] = table["chrom"].to_numpy()[idx[hit]]
    start[todo[hit]] = table["start"].to_numpy()[idx[hit]]
    end[todo[hit]] = table["end"].to_numpy()[idx[hit]]
    for code, name in MATCH_NAMES.items():
        if (how == code).any():
            sources[f"{genome} table by {name}"] = int((how == code).sum())
    return chrom.astype(str), start, end, ids, sources, warnings, genome
