"""What a "colour by" query names: a gene, a peak or bin, a gene's accessibility (gene activity) or a gene set.

:func:`resolve_feature` turns the text typed into the search box into a :class:`FeatureSpec`; the values are
computed by :class:`scclip.explore.FeatureStore`. Gene activity regions and the nearest gene of a peak come from
the bundled gene table of the data's genome (:func:`scclip.genome.gene_table`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scclip.errors import ScclipError
from scclip.features import activity_region
from scclip.genome import parse_interval

_ACTIVITY_RE = re.compile(
    r"^\s*(?:gene[\s_-]*activity(?:\s+of)?|activity(?:\s+of)?|accessibility(?:\s+of)?|ga)\s*[:\s]\s*(?P<g>\S+)\s*$"
    r"|^\s*(?P<g2>\S+)\s+(?:gene\s+)?activity\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FeatureSpec:
    """One resolved colour-by query.

    Attributes
    ----------
    kind
        ``"gene"`` (RNA expression), ``"peak"`` (ATAC accessibility of the peaks / bins overlapping an
        interval), ``"activity"`` (ATAC counts over a gene body + promoter) or ``"gene_set"``
        (:func:`scanpy.tl.score_genes` over RNA).
    modality
        The modality that measures it (``"rna"`` or ``"atac"``); the other modality gets imputed values.
    name
        Display name (gene symbol, ``chr:start-end``, ``"Gad1 activity"``, ``"score of 3 genes"``).
    columns
        Column positions in the measuring modality's matrix that make up the value (summed for peaks and
        activity; the genes of a gene set).
    region
        ``(chrom, start, end)`` for peaks and activity, else ``None``.
    """

    kind: str
    modality: str
    name: str
    columns: tuple[int, ...]
    region: tuple[str, int, int] | None = None
    genes: tuple[str, ...] = field(default=())

    @property
    def key(self) -> tuple:
        """Hashable cache key."""
        return (self.kind, self.modality, self.columns)

    @property
    def unit(self) -> str:
        """What the numbers are (colour bar title)."""
        return {
            "gene": "log1p CP10k",
            "peak": "ATAC counts",
            "activity": "ATAC counts (gene body + 2 kb)",
            "gene_set": "score_genes",
        }[self.kind]


def _suggest(query: str, names, n: int = 5) -> str:
    lower = {str(x).lower(): str(x) for x in names}
    close = difflib.get_close_matches(query.lower(), list(lower), n=n, cutoff=0.6)
    return f"; did you mean {', '.join(lower[c] for c in close)}?" if close else ""


def overlapping(
    chrom: np.ndarray, start: np.ndarray, end: np.ndarray, region: tuple[str, int, int]
) -> np.ndarray:
    """Positions of the intervals overlapping ``region`` (half-open coordinates)."""
    c, s, e = region
    return np.flatnonzero((chrom == c) & (start < e) & (end > s))


def nearest_genes(chrom, start, end, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Nearest gene of each interval in a gene table (gene_name, chrom, start, end): (names, distance in bp).

    Distance 0 means overlap. Intervals on chromosomes without genes get ``""`` and -1.
    """
    chrom, start, end = np.asarray(chrom).astype(str), np.asarray(start, np.int64), np.asarray(end, np.int64)
    names, dist = np.full(len(chrom), "", dtype=object), np.full(len(chrom), -1, dtype=np.int64)
    for c in np.unique(chrom):
        g = table[table["chrom"] == c].sort_values("start")
        rows = np.flatnonzero(chrom == c)
        if g.empty:
            continue
        gs, ge = g["start"].to_numpy(np.int64), g["end"].to_numpy(np.int64)
        gn = g["gene_name"].to_numpy(object)
        # upstream candidate: among genes starting before the interval ends, the one reaching furthest
        reach = np.maximum.accumulate(ge)
        arg = np.flatnonzero(np.r_[True, ge[1:] > reach[:-1]])  # where the running maximum changes
        owner = arg[np.searchsorted(arg, np.arange(len(ge)), side="right") - 1]
        i = np.searchsorted(gs, end[rows], side="left") - 1  # genes with start < interval end
        up = np.where(i >= 0, np.maximum(start[rows] - reach[np.maximum(i, 0)], 0), np.iinfo(np.int64).max)
        j = np.minimum(i + 1, len(gs) - 1)
        down = np.where(i + 1 < len(gs), np.maximum(gs[j] - end[rows], 0), np.iinfo(np.int64).max)
        use_up = up <= down
        names[rows] = np.where(use_up, gn[owner[np.maximum(i, 0)]], gn[j])
        dist[rows] = np.minimum(up, down)
    return names.astype(str), dist


def _interval(query: str) -> tuple[str, int, int] | None:
    try:
        return parse_interval(query.strip().replace(" ", ""))
    except ScclipError:
        return None


def resolve_feature(
    query: str,
    *,
    genes: pd.DataFrame | None,
    peaks: pd.DataFrame | None,
    gene_table: pd.DataFrame | None,
) -> FeatureSpec:
    """Resolve a colour-by query.

    Parameters
    ----------
    query
        ``"Gad1"`` / ``"gad1"`` / an Ensembl id (an RNA gene), ``"chr1:3,000,000-3,010,000"`` /
        ``"chr1-3000000-3010000"`` / ``"chr1_3000000_3010000"`` (the ATAC peaks or bins it overlaps),
        ``"gene activity of Gad1"`` / ``"Gad1 activity"`` / ``"activity:Gad1"`` (ATAC counts over the gene
        body + 2 kb promoter), or several genes separated by commas / spaces (a gene-set score).
    genes
        RNA features: columns ``symbol`` and ``id`` (``""`` when unknown), one row per matrix column; ``None``
        when the data have no RNA.
    peaks
        ATAC features: ``name``, ``chrom``, ``start``, ``end`` (``chrom == ""`` when unplaced); ``None``
        without ATAC.
    gene_table
        The bundled gene table of the data's genome (gene activity of genes not measured in RNA); may be None.

    Returns
    -------
    FeatureSpec

    Raises
    ------
    ScclipError
        One line naming the query and, when there are any, close matches.
    """
    q = str(query).strip()
    if not q:
        raise ScclipError("type a gene, a peak 'chr1:100-200' or 'gene activity of GENE'")
    m = _ACTIVITY_RE.match(q)
    if m:
        return _activity(m.group("g") or m.group("g2"), peaks, gene_table)
    region = _interval(q)
    if region is not None:
        return _peak(q, region, peaks)
    tokens = [t for t in re.split(r"[,;\s]+", q) if t]
    if len(tokens) > 1:
        return _gene_set(tokens, genes)
    hit = _gene_column(q, genes)
    if hit is not None:
        return FeatureSpec("gene", "rna", str(genes["symbol"].iat[hit]), (hit,))
    if peaks is not None and gene_table is not None and q.lower() in set(gene_table["gene_name"].str.lower()):
        return _activity(q, peaks, gene_table)  # a gene the RNA lacks: its accessibility
    known = [] if genes is None else list(genes["symbol"])
    if gene_table is not None:
        known += list(gene_table["gene_name"])
    raise ScclipError(f"unknown gene or peak {q!r}{_suggest(q, known)}")


def _gene_column(q: str, genes: pd.DataFrame | None) -> int | None:
    """Matrix column of a gene by symbol, then by id (case-insensitive, Ensembl version ignored)."""
    if genes is None:
        return None
    key = q.lower()
    for col in ("symbol", "id"):
        vals = genes[col].astype(str).str.lower()
        if col == "id":
            vals, key = vals.str.replace(r"\.\d+$", "", regex=True), re.sub(r"\.\d+$", "", key)
        hit = np.flatnonzero(vals.to_numpy() == key)
        if hit.size:
            return int(hit[0])
    return None


def _gene_set(tokens: list[str], genes: pd.DataFrame | None) -> FeatureSpec:
    if genes is None:
        raise ScclipError("a gene-set score needs RNA cells; this dataset has no RNA modality")
    cols = [c for c in (_gene_column(t, genes) for t in tokens) if c is not None]
    missing = [t for t in tokens if _gene_column(t, genes) is None]
    if not cols:
        raise ScclipError(
            f"none of the genes {tokens[:5]} is measured in RNA{_suggest(tokens[0], genes['symbol'])}"
        )
    cols = tuple(dict.fromkeys(cols))
    names = tuple(str(genes["symbol"].iat[c]) for c in cols)
    note = f" ({len(missing)} not measured: {', '.join(missing[:3])})" if missing else ""
    return FeatureSpec("gene_set", "rna", f"score of {len(cols)} genes{note}", cols, genes=names)


def _peak(q: str, region: tuple[str, int, int], peaks: pd.DataFrame | None) -> FeatureSpec:
    if peaks is None:
        raise ScclipError(f"{q!r} is a genomic interval but this dataset has no ATAC cells")
    c, s, e = region
    hit = overlapping(peaks["chrom"].to_numpy(), peaks["start"].to_numpy(), peaks["end"].to_numpy(), region)
    if hit.size == 0:
        on = peaks[peaks["chrom"] == c]
        near = ""
        if len(on):
            d = np.maximum(np.maximum(on["start"].to_numpy() - e, s - on["end"].to_numpy()), 0)
            near = f"; nearest peak {on['name'].iat[int(np.argmin(d))]} ({int(d.min()):,} bp away)"
        raise ScclipError(f"no ATAC peak or bin overlaps {c}:{s}-{e}{near}")
    name = str(peaks["name"].iat[hit[0]]) if hit.size == 1 else f"{c}:{s}-{e} ({hit.size} peaks)"
    return FeatureSpec("peak", "atac", name, tuple(int(i) for i in hit), region=region)


def _activity(gene: str, peaks: pd.DataFrame | None, table: pd.DataFrame | None) -> FeatureSpec:
    if peaks is None:
        raise ScclipError(f"gene activity of {gene!r} needs ATAC cells; this dataset has no ATAC modality")
    if table is None:
        raise ScclipError("gene activity needs the genome's gene table: pass genome='mm10' or 'hg38'")
    rows = table[table["gene_name"].str.lower() == gene.lower()]
    if rows.empty:
        raise ScclipError(f"unknown gene {gene!r} in the gene table{_suggest(gene, table['gene_name'])}")
    g = rows.iloc[0]
    strand = g["strand"] if "strand" in rows.columns else None
    region = activity_region(str(g["chrom"]), int(g["start"]), int(g["end"]), strand)
    hit = overlapping(peaks["chrom"].to_numpy(), peaks["start"].to_numpy(), peaks["end"].to_numpy(), region)
    if hit.size == 0:
        raise ScclipError(
            f"no ATAC peak lies within {g['gene_name']}'s body + 2 kb promoter ({region[0]}:{region[1]}-{region[2]})"
        )
    return FeatureSpec(
        "activity",
        "atac",
        f"{g['gene_name']} activity",
        tuple(int(i) for i in hit),
        region=region,
        genes=(str(g["gene_name"]),),
    )
