"""One modality's features in model order and their patch layout: :class:`ModalityFeatures`, :func:`patch_layout`.

Features are kept in natural genome order and cut into contiguous patches (the paper's pad-and-reshape
layout, or patches that never span two chromosomes). The constructors live in :mod:`scclip.feature_builders`;
everything here is re-exported by :mod:`scclip.features`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scclip._constants import MODALITIES
from scclip.errors import ScclipError
from scclip.genome import genome_alias

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
