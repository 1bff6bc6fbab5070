"""The feature space every model carries: genome-ordered features per modality, cut into patches.

A :class:`ModalityFeatures` lists one modality's features in model order (natural genome order) with their
coordinates and patch layout. Three kinds exist:

- ``"own"``: the training data's genes / peaks (:func:`features_from_anndata`),
- ``"genes"``: every gene of the bundled gene table (:func:`gene_features`),
- ``"bins"``: fixed-width bins tiling the assembly (:func:`bin_features`), which any peak set maps onto.

A :class:`FeatureSpace` holds the genome and both modalities and saves / loads itself in a model folder.
Query data are mapped onto a feature space with :func:`scclip.features.align_features`; to put a training
AnnData's columns in model order, use ``align_features(adata, features).transform(adata.X)``.
Coordinates, gene ids and symbols are read from ``AnnData.var`` by ``scclip/features/_var_coords.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scclip.errors import ScclipError
from scclip.features._builders import (
    bin_features,
    features_from_anndata,
    gene_features,
)
from scclip.features._modality import MODALITIES, ModalityFeatures
from scclip.genome import (
    chrom_sizes,
    genome_alias,
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
