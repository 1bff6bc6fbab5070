"""The feature space every model carries: genome-ordered features per modality, cut into patches.

A :class:`ModalityFeatures` lists one modality's features in model order (natural genome order) with their
coordinates and patch layout. Three kinds exist:

- ``"own"``: the training data's genes / peaks (:func:`features_from_anndata`),
- ``"genes"``: every gene of the bundled gene table (:func:`gene_features`),
- ``"bins"``: fixed-width bins tiling the assembly (:func:`bin_features`), which any peak set maps onto.

A :class:`FeatureSpace` holds the genome and both modalities and saves / loads itself in a model folder.
Query data are mapped onto a feature space with :func:`scclip.align.align_features`; to put a training
AnnData's columns in model order, use ``align_features(adata, features).transform(adata.X)``.
Coordinates, gene ids and symbols are read from ``AnnData.var`` by :mod:`scclip.var_coords`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scclip.errors import ScclipError
from scclip.genome import (
    BUNDLED_GENOMES,
    check_intervals_in_genome,
    chrom_sizes,
    gene_table,
    genome_alias,
    genome_order,
    infer_genome,
    normalize_chroms,
)

# var readers live in scclip.var_coords; re-exported so ``from scclip.features import var_intervals`` keeps working
from scclip.var_coords import (  # noqa: F401
    gene_coordinates,
    resolve_genome,
    var_gene_ids,
    var_gene_symbols,
    var_intervals,
)

MODALITIES = ("rna", "atac")
KINDS = ("own", "genes", "bins")


def patch_layout(
    chrom: np.ndarray,
    *,
    n_patches: int | None = None,
    patch_size: int | None = None,
    within_chromosome: bool = False,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Cut genome-ordered features into contiguous patches: (patch, offset, n_patches, patch_size).

    Give exactly one of ``n_patches`` / ``patch_size``. The default is the paper's layout (pad to
    ``n_patches * patch_size`` and reshape): ``patch = i // patch_size`` with ``patch_size =
    ceil(n / n_patches)``, so the last patches may be short or empty and ``n_patches`` stays as asked.
    With ``within_chromosome=True`` no patch spans two chromosomes: each run of equal ``chrom`` values is
    cut into chunks of ``patch_size``; given ``n_patches``, the smallest ``patch_size`` whose total number
    of patches is <= ``n_patches`` is used and the returned ``n_patches`` is that total. Features without
    coordinates (``chrom == ""``, placed last by the constructors) form their own run.
    """
    chrom = np.asarray(chrom).astype(str)
    n = len(chrom)
    if n == 0:
        raise ScclipError("cannot lay out patches over zero features; the modality has no features.")
    if (n_patches is None) == (patch_size is None):
        raise ScclipError("give exactly one of n_patches or patch_size to lay out the patches.")
    if (n_patches is not None and int(n_patches) < 1) or (patch_size is not None and int(patch_size) < 1):
        raise ScclipError(f"n_patches and patch_size must be positive (got {n_patches}, {patch_size}).")
    idx = np.arange(n, dtype=np.int64)
    if not within_chromosome:
        if patch_size is None:
            n_patches = int(n_patches)
            patch_size = math.ceil(n / n_patches)
        else:
            patch_size = int(patch_size)
            n_patches = math.ceil(n / patch_size)
        return idx // patch_size, idx % patch_size, int(n_patches), int(patch_size)
    # runs of equal chromosome names
    starts = np.flatnonzero(np.r_[True, chrom[1:] != chrom[:-1]])
    lengths = np.diff(np.r_[starts, n])
    if patch_size is None:
        if int(n_patches) < len(starts):
            msg = (
                f"n_patches={n_patches} is fewer than the {len(starts)} chromosomes; with within_chromosome=True "
                "every chromosome needs its own patch: raise n_patches or set within_chromosome=False."
            )
            raise ScclipError(msg)
        lo, hi = 1, int(lengths.max())  # smallest p with sum(ceil(len / p)) <= n_patches
        while lo < hi:
            mid = (lo + hi) // 2
            if int(np.sum(-(-lengths // mid))) <= int(n_patches):
                hi = mid
            else:
                lo = mid + 1
        patch_size = lo
    patch_size = int(patch_size)
    per_run = -(-lengths // patch_size)
    run_first_patch = np.r_[0, np.cumsum(per_run)[:-1]]
    run_of = np.repeat(np.arange(len(starts)), lengths)
    rank = idx - starts[run_of]
    patch = run_first_patch[run_of] + rank // patch_size
    return patch.astype(np.int64), (rank % patch_size).astype(np.int64), int(per_run.sum()), patch_size


@dataclass
class ModalityFeatures:
    """One modality's features in model order (natural genome order) and their patch layout.

    Attributes
    ----------
    modality : ``"rna"`` or ``"atac"``
    names : feature names (str) in model order
    chrom : UCSC chromosome per feature (``"chr1"``); ``""`` when unknown (genes without coordinates, last)
    start, end : int64 0-based half-open coordinates (0 when unknown)
    ids : gene ids (e.g. Ensembl) when known, else None
    kind : ``"own"``, ``"genes"`` or ``"bins"``
    bin_size : bin width for kind ``"bins"``
    patch_size, n_patches : layout (see :func:`patch_layout`)
    patch, offset : int64 per feature: patch index (non-decreasing) and position inside the patch
    within_chromosome : whether patches were cut per chromosome
    genome : canonical assembly (``mm10``, ``hg38``) when known
    """

    modality: str
    names: np.ndarray
    chrom: np.ndarray
    start: np.ndarray
    end: np.ndarray
    ids: np.ndarray | None = None
    kind: str = "own"
    bin_size: int | None = None
    patch_size: int | None = None
    n_patches: int | None = None
    patch: np.ndarray | None = None
    offset: np.ndarray | None = None
    within_chromosome: bool = False
    genome: str | None = None
    chromosomes: list[str] | None = field(default=None, repr=False)
    observed_only: bool = False

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ScclipError(f"unknown modality {self.modality!r}; use one of {MODALITIES}.")
        if self.kind not in KINDS:
            raise ScclipError(f"unknown feature kind {self.kind!r}; use one of {KINDS}.")
        self.names = np.asarray(self.names).astype(str)
        self.chrom = np.asarray(self.chrom).astype(str)
        self.start = np.asarray(self.start, dtype=np.int64)
        self.end = np.asarray(self.end, dtype=np.int64)
        if self.ids is not None:
            self.ids = np.asarray(self.ids).astype(str)
        n = len(self.names)
        arrays = [self.chrom, self.start, self.end] + ([self.ids] if self.ids is not None else [])
        if any(len(a) != n for a in arrays):
            raise ScclipError(
                "feature names, chrom, start, end (and ids) must all have one entry per feature."
            )
        if self.patch is None:
            p, o, self.n_patches, self.patch_size = patch_layout(
                self.chrom,
                n_patches=self.n_patches if self.patch_size is None else None,
                patch_size=self.patch_size,
                within_chromosome=self.within_chromosome,
            )
            self.patch, self.offset = p, o
        self.patch = np.asarray(self.patch, dtype=np.int64)
        self.offset = np.asarray(self.offset, dtype=np.int64)
        if len(self.patch) != n or len(self.offset) != n or self.n_patches is None or self.patch_size is None:
            raise ScclipError(
                "the patch layout (patch, offset, n_patches, patch_size) does not match the features."
            )
        if n and (
            np.any(np.diff(self.patch) < 0)
            or self.patch.max() >= self.n_patches
            or self.offset.min() < 0
            or self.offset.max() >= self.patch_size
        ):
            raise ScclipError(
                "invalid patch layout: patches must be non-decreasing and offsets < patch_size."
            )
        self.genome = genome_alias(self.genome) if self.genome else None

    @property
    def n_features(self) -> int:
        return len(self.names)

    def to_frame(self) -> pd.DataFrame:
        """name, id, chrom, start, end, patch, offset per feature in model order."""
        ids = self.ids if self.ids is not None else np.full(self.n_features, "", dtype=object)
        return pd.DataFrame(
            {
                "name": self.names,
                "id": ids,
                "chrom": self.chrom,
                "start": self.start,
                "end": self.end,
                "patch": self.patch,
                "offset": self.offset,
            }
        )

    @classmethod
    def from_frame(cls, df: pd.DataFrame, *, modality: str, **spec) -> ModalityFeatures:
        """Inverse of :meth:`to_frame`; ``spec`` holds kind, n_patches, patch_size, ... (see :meth:`spec`)."""
        ids = df["id"].fillna("").astype(str).to_numpy() if "id" in df else None
        if ids is not None and not (ids != "").any():
            ids = None
        keys = (
            "kind",
            "bin_size",
            "n_patches",
            "patch_size",
            "within_chromosome",
            "genome",
            "chromosomes",
            "observed_only",
        )
        kwargs = {k: spec[k] for k in keys if k in spec}
        return cls(
            modality=modality,
            names=df["name"].astype(str).to_numpy(),
            chrom=df["chrom"].fillna("").astype(str).to_numpy(),
            start=df["start"].to_numpy(),
            end=df["end"].to_numpy(),
            ids=ids,
            patch=df["patch"].to_numpy() if "patch" in df else None,
            offset=df["offset"].to_numpy() if "offset" in df else None,
            **kwargs,
        )

    def spec(self) -> dict:
        """JSON-safe description (no per-feature arrays)."""
        out = {
            "kind": self.kind,
            "n_features": int(self.n_features),
            "n_patches": int(self.n_patches),
            "patch_size": int(self.patch_size),
            "within_chromosome": bool(self.within_chromosome),
            "bin_size": None if self.bin_size is None else int(self.bin_size),
            "has_ids": self.ids is not None,
            "with_coordinates": int((self.chrom != "").sum()),
            "observed_only": bool(self.observed_only),
        }
        if self.kind == "bins":
            out["chromosomes"] = list(self.chromosomes or pd.unique(self.chrom).tolist())
        return out


def _layout_kwargs(n_patches, patch_size, within_chromosome) -> dict:
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
    layout = _layout_kwargs(n_patches, patch_size, within_chromosome)
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
        **_layout_kwargs(n_patches, patch_size, within_chromosome),
    )


def _bins(sizes: dict[str, int], bin_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    names, chrom, start, end = _bins(all_sizes, int(bin_size))
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
        **_layout_kwargs(n_patches, patch_size, within_chromosome),
    )


class FeatureSpace:
    """The genome and the per-modality features a model was trained on."""

    def __init__(
        self,
        genome: str | None = None,
        *,
        rna: ModalityFeatures | None = None,
        atac: ModalityFeatures | None = None,
    ) -> None:
        canon = genome_alias(genome) if genome else None
        if genome and canon is None:
            raise ScclipError(f"unknown genome {genome!r}; use 'mm10' (GRCm38) or 'hg38' (GRCh38).")
        for feats, mod in ((rna, "rna"), (atac, "atac")):
            if feats is not None:
                if feats.modality != mod:
                    raise ScclipError(f"{mod} features were built for modality {feats.modality!r}.")
                canon = canon or feats.genome
                if feats.genome and canon and feats.genome != canon:
                    msg = f"the {mod} features are on {feats.genome} but the feature space is on {canon}."
                    raise ScclipError(msg)
                feats.genome = canon
        self.genome, self.rna, self.atac = canon, rna, atac

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if getattr(self, m) is not None]

    def __getitem__(self, modality: str) -> ModalityFeatures:
        feats = getattr(self, modality, None) if modality in MODALITIES else None
        if feats is None:
            raise ScclipError(f"the feature space has no {modality!r} modality (it has {self.modalities}).")
        return feats

    def to_dict(self) -> dict:
        """JSON-safe description: genome, chromosome sizes, per-modality spec (no per-feature arrays)."""
        sizes = None
        if self.genome in ("mm10", "hg38"):
            sizes = {c: int(n) for c, n in chrom_sizes(self.genome).items()}
        return {
            "genome": self.genome,
            "chrom_sizes": sizes,
            "modalities": {m: self[m].spec() for m in self.modalities},
        }

    def save(self, directory: str | Path) -> dict:
        """Write ``features_{modality}.tsv.gz`` (not for a full bin grid, rebuilt from the spec); return to_dict()."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for m in self.modalities:
            if self[m].kind != "bins" or self[m].observed_only:
                self[m].to_frame().to_csv(
                    directory / f"features_{m}.tsv.gz",
                    sep="\t",
                    index=False,
                    compression={"method": "gzip", "compresslevel": 6, "mtime": 0},
                )
        return self.to_dict()

    @classmethod
    def load(cls, directory: str | Path, spec: dict | str | Path) -> FeatureSpace:
        """Rebuild from a folder written by :meth:`save` and its :meth:`to_dict` (a dict or a JSON file)."""
        directory = Path(directory)
        if not isinstance(spec, dict):
            spec = json.loads(Path(spec).read_text())
        genome = spec.get("genome")
        mods: dict[str, ModalityFeatures] = {}
        for m, s in spec.get("modalities", {}).items():
            path = directory / f"features_{m}.tsv.gz"
            if path.exists():
                df = pd.read_csv(
                    path, sep="\t", dtype={"name": str, "id": str, "chrom": str}, keep_default_na=False
                )
                feats = ModalityFeatures.from_frame(df, modality=m, genome=genome, **s)
            elif s.get("kind") == "bins":
                sizes = spec.get("chrom_sizes") or chrom_sizes(genome)
                feats = bin_features(
                    genome,
                    bin_size=s["bin_size"],
                    chromosomes=s.get("chromosomes"),
                    patch_size=s["patch_size"],
                    within_chromosome=s.get("within_chromosome", False),
                    sizes=sizes,
                )
                # the paper layout may end in empty patches: keep the saved count (never fewer than needed)
                if feats.n_patches > int(s["n_patches"]) or (
                    feats.within_chromosome and feats.n_patches != int(s["n_patches"])
                ):
                    msg = f"the saved {m} bin layout ({s['n_patches']} patches) cannot be rebuilt; save the model again."
                    raise ScclipError(msg)
                feats.n_patches = int(s["n_patches"])
            else:
                msg = f"the model folder {directory} lacks features_{m}.tsv.gz; it is incomplete, save it again."
                raise ScclipError(msg)
            if feats.n_features != s.get("n_features", feats.n_features):
                msg = (
                    f"{m} features in {directory} number {feats.n_features}, the spec says {s['n_features']}; "
                    "the model folder is inconsistent."
                )
                raise ScclipError(msg)
            mods[m] = feats
        return cls(genome, **mods)

    def __repr__(self) -> str:
        parts = [
            f"{m}: {self[m].kind}, {self[m].n_features} features in {self[m].n_patches} patches"
            for m in self.modalities
        ]
        return f"FeatureSpace(genome={self.genome!r}; " + "; ".join(parts) + ")"


def make_feature_space(
    *,
    rna=None,
    atac=None,
    genome: str | None = None,
    rna_kind: str = "own",
    atac_kind: str = "own",
    bin_size: int = 5000,
    n_patches: int | None = None,
    patch_size: int | None = None,
    within_chromosome: bool = False,
) -> tuple[FeatureSpace, dict]:
    """Build both modalities at once: ``rna`` / ``atac`` are AnnData (needed for kind "own").

    ``rna_kind``: ``"own"`` or ``"genes"``; ``atac_kind``: ``"own"`` or ``"bins"`` (``bin_size`` bp). The
    layout options apply to both modalities. Returns (feature space, {modality: report}).
    """
    layout = {"n_patches": n_patches, "patch_size": patch_size, "within_chromosome": within_chromosome}
    reports: dict[str, dict] = {}
    mods: dict[str, ModalityFeatures] = {}
    if atac is not None or atac_kind == "bins":
        if atac_kind == "own":
            mods["atac"], reports["atac"] = features_from_anndata(
                atac, modality="atac", genome=genome, **layout
            )
            genome = genome or mods["atac"].genome
        elif atac_kind == "bins":
            if genome is None:
                raise ScclipError("bins need a genome: pass genome='mm10' or 'hg38'.")
            mods["atac"] = bin_features(genome, bin_size=bin_size, **layout)
        else:
            raise ScclipError(f"unknown atac feature kind {atac_kind!r}; use 'own' or 'bins'.")
    if rna is not None or rna_kind == "genes":
        if rna_kind == "own":
            mods["rna"], reports["rna"] = features_from_anndata(rna, modality="rna", genome=genome, **layout)
        elif rna_kind == "genes":
            if genome is None:
                raise ScclipError("the gene table needs a genome: pass genome='mm10' or 'hg38'.")
            mods["rna"] = gene_features(genome, **layout)
        else:
            raise ScclipError(f"unknown rna feature kind {rna_kind!r}; use 'own' or 'genes'.")
    if not mods:
        raise ScclipError("no modality given: pass rna= and/or atac= data.")
    return FeatureSpace(genome, **mods), reports


def restrict_to_observed(feats: ModalityFeatures, hit: np.ndarray) -> ModalityFeatures:
    """Keep the reference features marked in ``hit`` (bool per feature), in order, with a fresh patch layout.

    Used for reference feature spaces (gene table, genome bins): a feature that no training cell touches would
    carry a zero (frozen SVD) embedding, so dropping it loses nothing and keeps the model small. Query features
    outside the kept set are reported as unmapped by :func:`scclip.align.align_features`.
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
