"""Pairing: which cells both modalities measured, keeping only those, and reading RNA and ATAC from two files."""

from __future__ import annotations

import mudata as md
import pandas as pd

from scclip._constants import MODALITIES
from scclip.errors import ScclipError
from scclip.io._backed import BackedData
from scclip.io._checks import build_mudata
from scclip.io._read import read


def pairing_report(mdata: md.MuData) -> dict:
    """How many cells each modality has and how many are shared (paired = same barcode in both).

    Returns
    -------
    dict with ``n_rna``, ``n_atac``, ``n_shared``, ``paired`` (the modalities share at least one barcode),
    ``fraction`` (shared / all distinct cells), ``fraction_rna`` and ``fraction_atac`` (shared / each modality).
    """
    names = {m: mdata.mod[m].obs_names if m in mdata.mod else pd.Index([]) for m in MODALITIES}
    n_rna, n_atac = len(names["rna"]), len(names["atac"])
    n_shared = int(names["rna"].isin(names["atac"]).sum())
    n_union = n_rna + n_atac - n_shared
    return {
        "n_rna": n_rna,
        "n_atac": n_atac,
        "n_shared": n_shared,
        "paired": n_shared > 0,
        "fraction": n_shared / n_union if n_union else 0.0,
        "fraction_rna": n_shared / n_rna if n_rna else 0.0,
        "fraction_atac": n_shared / n_atac if n_atac else 0.0,
    }


def paired_cells(mdata: md.MuData | BackedData) -> md.MuData | BackedData:
    """The cells measured in both modalities, with ``rna`` and ``atac`` in the same (RNA) cell order.

    A :class:`BackedData` stays on disk: only the rows to read are selected.
    """
    missing = [m for m in MODALITIES if m not in mdata.mod]
    if missing:
        msg = f"Paired cells need both rna and atac; this data has no {' or '.join(missing)}."
        raise ScclipError(msg)
    rna, atac = mdata.mod["rna"], mdata.mod["atac"]
    shared = shared_barcodes(rna.obs_names, atac.obs_names)
    if isinstance(mdata, BackedData):
        rows = {m: a.take(a.obs_names.get_indexer(shared)) for m, a in (("rna", rna), ("atac", atac))}
        return BackedData(rows, info=mdata.uns.get("scclip_read"))
    info = dict(mdata.uns.get("scclip_read", {"notes": []}))
    info["notes"] = [*list(info.get("notes", [])), f"kept the {len(shared)} cells present in both modalities"]
    mods = {"rna": rna[shared].copy(), "atac": atac[shared].copy()}
    return build_mudata(mods, info, mdata.obs if mdata.obs.shape[1] else None)


def shared_barcodes(rna_names: pd.Index, atac_names: pd.Index) -> pd.Index:
    """The barcodes in both modalities, in RNA order; an error (with a hint on ``-N`` suffixes) when none."""
    rna = pd.Index(rna_names)
    atac = pd.Index(atac_names)
    shared = rna[rna.isin(atac)]
    if len(shared) == 0:
        hint = ""
        strip = r"-\d+$"
        if rna.str.replace(strip, "", regex=True).isin(atac.str.replace(strip, "", regex=True)).any():
            hint = " The barcodes match once a '-N' suffix is removed: make the suffixes agree."
        msg = (
            f"No barcode is shared between rna ({rna[0]}, ...) and atac ({atac[0]}, ...): "
            f"these are not paired measurements of the same cells; use them unpaired.{hint}"
        )
        raise ScclipError(msg)
    return shared


def read_pair(rna_path, atac_path, *, paired: bool = False) -> tuple[md.MuData, dict]:
    """Read RNA from one file and ATAC from another.

    Parameters
    ----------
    rna_path, atac_path
        Any file :func:`read` accepts; the ``rna`` (``atac``) modality is taken from each.
    paired
        The files measure the same cells (e.g. 10x Multiome): keep the shared barcodes in the same order
        (error when none are shared). Otherwise both are kept whole (unpaired).

    Returns
    -------
    The MuData and its :func:`pairing_report`.
    """
    rna = read(rna_path, modality="rna")
    atac = read(atac_path, modality="atac")
    notes = [*rna.uns["scclip_read"]["notes"], *atac.uns["scclip_read"]["notes"]]
    mods = {"rna": rna.mod["rna"], "atac": atac.mod["atac"]}
    shared = int(mods["rna"].obs_names.isin(mods["atac"].obs_names).sum())
    if shared and not paired:
        notes.append(f"the files share {shared} barcodes; pass paired=True to use them as paired cells")
    mdata = build_mudata(mods, {"source": f"{rna_path} + {atac_path}", "format": "pair", "notes": notes})
    report = pairing_report(mdata)
    return (paired_cells(mdata) if paired else mdata), report
