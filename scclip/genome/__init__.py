"""Genome assemblies: chromosome order, interval names, bundled gene tables and ids, dataset-vs-genome checks.

Coordinates are 0-based, half-open ``[start, end)`` (BED style). The modules:

- ``_assembly``: assembly aliases, chromosome names, natural order, interval parsing, bundled tables and sizes;
- ``_gene_ids``: Ensembl ids and gene matching by id / symbol / case-folded symbol;
- ``_checks``: a dataset's declared assembly and coordinates against a genome, and inferring the assembly.
"""

from __future__ import annotations

from scclip.genome._assembly import (
    BUNDLED_GENOMES,
    SPECIES,
    bundled_genome,
    cached_gene_table,
    chrom_rank,
    chrom_sizes,
    chrom_sort_key,
    gene_table,
    genome_alias,
    genome_order,
    is_primary_chrom,
    normalize_chrom,
    normalize_chroms,
    parse_interval,
    parse_intervals,
)
from scclip.genome._checks import (
    check_declared_genome,
    check_intervals_in_genome,
    declared_genomes,
    infer_genome,
    substantial,
)
from scclip.genome._gene_ids import (
    ENSEMBL_RE,
    MATCH_CASEFOLD,
    MATCH_ID,
    MATCH_NAMES,
    MATCH_NONE,
    MATCH_SYMBOL,
    check_casefold,
    check_ensembl_species,
    ensembl_species,
    looks_like_ensembl,
    match_genes,
    strip_version,
)

__all__ = [
    "BUNDLED_GENOMES",
    "ENSEMBL_RE",
    "MATCH_CASEFOLD",
    "MATCH_ID",
    "MATCH_NAMES",
    "MATCH_NONE",
    "MATCH_SYMBOL",
    "SPECIES",
    "bundled_genome",
    "cached_gene_table",
    "check_casefold",
    "check_declared_genome",
    "check_ensembl_species",
    "check_intervals_in_genome",
    "chrom_rank",
    "chrom_sizes",
    "chrom_sort_key",
    "declared_genomes",
    "ensembl_species",
    "gene_table",
    "genome_alias",
    "genome_order",
    "infer_genome",
    "is_primary_chrom",
    "looks_like_ensembl",
    "match_genes",
    "normalize_chrom",
    "normalize_chroms",
    "parse_interval",
    "parse_intervals",
    "strip_version",
    "substantial",
]
