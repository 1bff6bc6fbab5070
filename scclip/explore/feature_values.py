"""Colour by a feature: per-cell values of a gene, peak, gene activity or gene-set score on the joint cell table.

Keep one :class:`FeatureStore` per loaded dataset (e.g. in ``st.cache_resource`` keyed by the dataset and model
fingerprints). It builds, once and lazily, a CSC copy of each modality (RNA log1p CP10k as
:func:`scclip.preprocess.prepare_rna` does it, ATAC raw counts) and the top-``k`` cross-modal partners of every
cell; each feature's column is then a CSC column slice, cached, so recolouring 100k cells takes milliseconds.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclip.errors import ScclipError
from scclip.explore.constants import MODALITY_LABELS
from scclip.explore.feature_query import FeatureSpec, resolve_feature
from scclip.explore.joint import Joint
from scclip.features import var_gene_ids, var_gene_symbols, var_intervals
from scclip.genome import BUNDLED_GENOMES, gene_table, genome_alias, infer_genome
from scclip.preprocess import prepare_rna

#: Feature columns kept per store (least recently used ones are dropped first).
MAX_CACHED_COLUMNS = 256


@dataclass
class FeatureColors:
    """Per-cell values of one feature over the joint table (global cell index; NaN = no value, drawn grey).

    Attributes
    ----------
    spec
        The resolved query.
    measured
        The measuring modality's cells: their own value; NaN on the other modality's cells.
    imputed
        The other modality's cells: the mean over their ``k`` nearest cross-modal partners (cells of the
        measuring modality); NaN on the measuring modality's cells and when the data lack one modality.
    own
        Paired data only (else ``None``): the other modality's cells carry their own measured value (the same
        barcode's profile in the measuring modality); NaN elsewhere.
    title, note
        Colour bar title and a one-line legend saying which cells show what.
    """

    spec: FeatureSpec
    measured: np.ndarray
    imputed: np.ndarray
    own: np.ndarray | None
    title: str
    note: str

    def values(self, *, paired_own: bool = False) -> np.ndarray:
        """What to draw: measured values, and for the other modality imputed ones (or, with
        ``paired_own=True`` on paired data, their own measured value)."""
        other = self.own if (paired_own and self.own is not None) else self.imputed
        return np.where(np.isnan(self.measured), other, self.measured)


class FeatureStore:
    """Lazily built per-feature columns and cross-modal partners of one dataset.

    Parameters
    ----------
    data
        The counts the joint table was embedded from (MuData with ``rna`` and/or ``atac``; raw counts, cells in
        the embedded order). RNA already normalised is kept as is (:func:`scclip.preprocess.prepare_rna`).
    joint
        The dataset's :class:`~scclip.explore.Joint` (both modalities); ``None`` for a single-modality dataset,
        whose global index is then the present modality's cell order.
    genome
        Assembly of the gene table (gene activity, nearest genes); default: declared by or inferred from the
        data.
    k
        Cross-modal partners averaged by the imputed view.
    """

    def __init__(
        self, data: md.MuData, joint: Joint | None = None, *, genome: str | None = None, k: int = 15
    ):
        mods = [m for m in ("rna", "atac") if m in data.mod]
        if not mods:
            raise ScclipError("the dataset has neither an 'rna' nor an 'atac' modality")
        self.data, self.joint, self.k, self.mods = data, joint, int(k), mods
        sizes = [data[m].n_obs for m in mods]
        self.offset = dict(zip(mods, np.r_[0, np.cumsum(sizes)[:-1]].astype(int).tolist(), strict=True))
        self.n = int(sum(sizes))
        if joint is not None and (len(mods) < 2 or joint.n_rna != sizes[0] or joint.n != self.n):
            msg = f"the joint table ({joint.n_rna} RNA of {joint.n} cells) does not match the data ({dict(zip(mods, sizes, strict=True))})"
            raise ScclipError(msg)
        self._mat: dict[str, sp.csr_matrix] = {}
        self._csc: dict[str, sp.csc_matrix] = {}
        self._cols: OrderedDict = OrderedDict()
        self._partners: dict[str, np.ndarray] = {}
        self._tables: dict[str, pd.DataFrame | None] = {}
        self.genome = self._genome(genome)

    # ------------------------------------------------------------------ tables
    def _genome(self, genome: str | None) -> str | None:
        declared = genome or self.data.uns.get("genome") or self.data.uns.get("scclip", {}).get("genome")
        canon = genome_alias(str(declared)) if declared else None
        if canon is None:
            chroms = self.peaks["chrom"].to_numpy() if "atac" in self.mods else None
            genes = self.genes["symbol"].to_numpy() if "rna" in self.mods else None
            canon = infer_genome(chroms, genes)
        return canon if canon in BUNDLED_GENOMES else None

    @property
    def genes(self) -> pd.DataFrame | None:
        """RNA features (``symbol``, ``id``) in matrix column order, or None without RNA."""
        if "rna" not in self.mods:
            return None
        if "genes" not in self._tables:
            a = self.data["rna"]
            ids = var_gene_ids(a)
            self._tables["genes"] = pd.DataFrame(
                {"symbol": var_gene_symbols(a), "id": ids if ids is not None else ""}
            )
        return self._tables["genes"]

    @property
    def peaks(self) -> pd.DataFrame | None:
        """ATAC features (``name``, ``chrom``, ``start``, ``end``; chrom ``""`` when unplaced), or None."""
        if "atac" not in self.mods:
            return None
        if "peaks" not in self._tables:
            a = self.data["atac"]
            chrom, start, end, _ = var_intervals(a, errors="coerce")
            names = np.asarray(a.var_names).astype(str)
            self._tables["peaks"] = pd.DataFrame({"name": names, "chrom": chrom, "start": start, "end": end})
        return self._tables["peaks"]

    @property
    def gene_table(self) -> pd.DataFrame | None:
        """The bundled gene table of :attr:`genome` (None when the genome is unknown)."""
        if "gene_table" not in self._tables:
            self._tables["gene_table"] = gene_table(self.genome) if self.genome else None
        return self._tables["gene_table"]

    def require(self, *modalities: str, what: str = "this view") -> None:
        """Raise a one-line :class:`ScclipError` when the dataset lacks one of ``modalities``."""
        missing = [MODALITY_LABELS[m] for m in modalities if m not in self.mods]
        if missing:
            have = " and ".join(MODALITY_LABELS[m] for m in self.mods)
            need = " and ".join(MODALITY_LABELS[m] for m in modalities)
            raise ScclipError(f"{what} needs {need} cells; this dataset has only {have} cells")

    def cells(self, modality: str) -> np.ndarray:
        """Global indices of one modality's cells."""
        self.require(modality)
        return np.arange(self.offset[modality], self.offset[modality] + self.data[modality].n_obs)

    # ------------------------------------------------------------------ matrices
    def matrix(self, modality: str) -> sp.csr_matrix:
        """Cells x features CSR: RNA log1p CP10k (unless already normalised), ATAC raw counts (float32)."""
        self.require(modality)
        if modality not in self._mat:
            X = self.data[modality].X
            X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
            X = prepare_rna(X)[0] if modality == "rna" else X.astype(np.float32)
            self._mat[modality] = X
        return self._mat[modality]

    def csc(self, modality: str) -> sp.csc_matrix:
        """The CSC copy of :meth:`matrix` (built once): feature columns in O(column non-zeros)."""
        if modality not in self._csc:
            self._csc[modality] = self.matrix(modality).tocsc()
        return self._csc[modality]

    def column(self, spec: FeatureSpec) -> np.ndarray:
        """The measuring modality's per-cell value of ``spec`` (float64, one per cell of that modality)."""
        key = spec.key
        if key in self._cols:
            self._cols.move_to_end(key)
            return self._cols[key]
        if spec.kind == "gene_set":
            values = self._gene_set_score(spec)
        else:
            block = self.csc(spec.modality)[:, list(spec.columns)]
            values = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
        self._cols[key] = values
        while len(self._cols) > MAX_CACHED_COLUMNS:
            self._cols.popitem(last=False)
        return values

    def _gene_set_score(self, spec: FeatureSpec) -> np.ndarray:
        import anndata as ad
        import scanpy as sc

        adata = ad.AnnData(self.matrix("rna"), var=pd.DataFrame(index=pd.Index(self._unique_symbols())))
        names = [adata.var_names[c] for c in spec.columns]
        sc.tl.score_genes(adata, names, ctrl_size=min(50, max(adata.n_vars - len(names), 1)), random_state=0)
        return adata.obs["score"].to_numpy(dtype=np.float64)

    def _unique_symbols(self) -> np.ndarray:
        sym = pd.Series(self.genes["symbol"].astype(str))
        dup = sym.duplicated(keep=False)
        return np.where(dup, sym + "-" + np.arange(len(sym)).astype(str), sym).astype(str)

    # ------------------------------------------------------------------ partners
    def partners(self, target: str) -> np.ndarray:
        """``(n_target, k)`` global indices of the ``k`` nearest cells of the other modality for every cell of
        modality ``target`` (:func:`scclip.match.topk_partners` on the joint embedding, computed once)."""
        from scclip.match import topk_partners

        self.require("rna", "atac", what="the cross-modal view")
        if self.joint is None:
            raise ScclipError("the cross-modal view needs the joint embedding: pass joint= to FeatureStore")
        if target not in self._partners:
            source = "atac" if target == "rna" else "rna"
            q, r = self.cells(target), self.cells(source)
            idx, _ = topk_partners(self.joint.Z[q], self.joint.Z[r], k=self.k)
            self._partners[target] = r[idx]
        return self._partners[target]

    # ------------------------------------------------------------------ the public entry points
    def resolve(self, query: str) -> FeatureSpec:
        """:func:`~scclip.explore.resolve_feature` against this dataset's features."""
        return resolve_feature(query, genes=self.genes, peaks=self.peaks, gene_table=self.gene_table)

    def colors(self, query: str | FeatureSpec, *, impute: bool = True) -> FeatureColors:
        """Per-cell values of a feature over the global cell index (see :class:`FeatureColors`).

        Parameters
        ----------
        query
            A query string (:meth:`resolve`) or a resolved :class:`FeatureSpec`.
        impute
            Compute the cross-modal view (needs both modalities and the joint table); ``False`` leaves the
            other modality NaN.
        """
        spec = self.resolve(query) if isinstance(query, str) else query
        values = self.column(spec)
        src = self.cells(spec.modality)
        measured = np.full(self.n, np.nan)
        measured[src] = values
        imputed = np.full(self.n, np.nan)
        target = "atac" if spec.modality == "rna" else "rna"
        can_impute = impute and self.joint is not None and target in self.mods
        if can_impute:
            imputed[self.cells(target)] = measured[self.partners(target)].mean(axis=1)
        own = None
        if can_impute and self.joint.paired:
            tgt = self.cells(target)
            p = self.joint.partner[tgt]
            own = np.full(self.n, np.nan)
            own[tgt[p >= 0]] = measured[p[p >= 0]]
        src_label, tgt_label = MODALITY_LABELS[spec.modality], MODALITY_LABELS[target]
        note = f"{src_label} cells: {spec.name} ({spec.unit})"
        if can_impute:
            note += f"; {tgt_label} cells: imputed, mean over their {self.k} nearest {src_label} cells"
        return FeatureColors(spec, measured, imputed, own, f"{spec.name}<br>{spec.unit}", note)
