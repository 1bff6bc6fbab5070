"""The input preparation that ``train`` and ``embed`` share: open what the user passed, map one modality onto a
model's features and apply the model's preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import mudata as md

from scclip.features import align_features
from scclip.io import as_backed, is_backed, modality_of_anndata, read, read_backed, unsupported_input
from scclip.preprocess import prepare_atac, prepare_rna
from scclip.pretrained import ScclipModel


def map_modality(adata: ad.AnnData, features, *, genome: str | None = None):
    """Counts of one modality on the model's features: (CSR cells x model features, coverage report)."""
    alignment = align_features(adata, features, genome=genome)
    report = {**alignment.report, "count_coverage": float(alignment.count_coverage(adata.X))}
    return alignment.transform(adata.X), report


def preprocess_modality(model: ScclipModel, X, modality: str):
    """The model's preprocessing of mapped counts: (CSR, what was done)."""
    if modality == "rna":
        return prepare_rna(X)
    return prepare_atac(X, method=model.preprocessing["atac"]["method"], idf=model.idf)


def prepare_modality(model: ScclipModel, adata: ad.AnnData, modality: str, *, genome: str | None = None):
    """Map one modality onto the model's features and preprocess it: (CSR cells x model features, report)."""
    X, report = map_modality(adata, model.feature_space[modality], genome=genome)
    X, prep = preprocess_modality(model, X, modality)
    return X, {**report, "preprocessing": prep}


def as_mudata(data) -> md.MuData:
    """MuData, AnnData (its modality inferred) or ``{"rna": AnnData, ...}`` as a MuData."""
    if isinstance(data, md.MuData):
        return data
    if isinstance(data, ad.AnnData):
        return md.MuData({modality_of_anndata(data): data})
    if isinstance(data, dict):
        return md.MuData(data)
    raise unsupported_input(data)


def open_input(data, chunk_size: int | None):
    """(MuData or :class:`scclip.io.BackedData`, the file this call opened or ``None``) for embed / train."""
    if isinstance(data, str | Path):
        if chunk_size is None:
            return read(data), None
        opened = read_backed(data)
        return opened, opened
    if chunk_size is not None or is_backed(data):
        return as_backed(data), None
    return as_mudata(data), None
