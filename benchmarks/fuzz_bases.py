"""Seed files for the reader fuzzing (issue 19): the real small files of ``../shared/data/formats``, a cell subset
of the SNARE-seq file, and the same PBMC cells written as Cell Ranger ``.h5``, Matrix Market folder and archive,
and a BGZF fragments subset; with each seed's reference content (what an unmutated read gives).

Used by ``benchmarks/fuzz.py`` and ``tests/test_fuzz_inputs.py`` (through ``fuzz_mutations`` / ``fuzz_runner``).
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


@dataclass
class ModRef:
    """What one modality must read as: counts (float32 CSR, canonical), cell and feature names, peak coordinates."""

    X: sp.csr_matrix
    obs: np.ndarray
    var: np.ndarray
    coords: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


@dataclass
class Base:
    """One seed file: ``kind`` says which mutations apply (``ad`` AnnData-HDF5, ``tenx`` Cell Ranger .h5, ``mtx``
    Matrix Market folder, ``tar`` archive of one, ``frag`` fragments); ``groups`` maps modality -> HDF5 prefix."""

    name: str
    path: Path
    kind: str
    groups: dict[str, str] = field(default_factory=dict)
    ref: dict[str, ModRef] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def canonical(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sum_duplicates()
    X.sort_indices()
    return X


def modref(adata, with_coords: bool) -> ModRef:
    coords = None
    if with_coords:
        from scclip.features import var_intervals

        chrom, start, end, _ = var_intervals(adata)
        coords = (np.asarray(chrom).astype(str), np.asarray(start), np.asarray(end))
    return ModRef(
        canonical(adata.X),
        np.asarray(adata.obs_names).astype(str),
        np.asarray(adata.var_names).astype(str),
        coords,
    )


def mudata_ref(mdata) -> dict[str, ModRef]:
    return {m: modref(mdata.mod[m], m == "atac") for m in mdata.mod}


# --------------------------------------------------------------------------------------------- writers
def bgzf(data: bytes, block: int = 8192) -> tuple[bytes, list[int]]:
    """``data`` compressed as BGZF (blocks of ``block`` bytes, then the end-of-file block); block offsets."""
    out, offsets, pos = [], [], 0
    for i in range(0, len(data), block):
        chunk = data[i : i + block]
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        comp = c.compress(chunk) + c.flush()
        head = (
            b"\x1f\x8b\x08\x04\0\0\0\0\0\xff"
            + struct.pack("<H", 6)
            + b"BC"
            + struct.pack("<HH", 2, len(comp) + 25)
        )
        blk = head + comp + struct.pack("<II", zlib.crc32(chunk) & 0xFFFFFFFF, len(chunk))
        out.append(blk)
        offsets.append(pos)
        pos += len(blk)
    offsets.append(pos)
    return b"".join([*out, BGZF_EOF]), offsets


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def feature_table(mdata) -> pd.DataFrame:
    """10x features (id, name, type, chrom, start, end) of a MuData's rna + atac, in that order."""
    from scclip.features import var_intervals

    rows = []
    for m, kind in (("rna", "Gene Expression"), ("atac", "Peaks")):
        if m not in mdata.mod:
            continue
        a = mdata.mod[m]
        chrom, start, end, _ = var_intervals(a, errors="coerce")
        ids = a.var["gene_ids"].astype(str).to_numpy() if "gene_ids" in a.var else np.asarray(a.var_names)
        rows.append(
            pd.DataFrame(
                {
                    "id": ids,
                    "name": np.asarray(a.var_names),
                    "type": kind,
                    "chrom": chrom,
                    "start": start,
                    "end": end,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def write_10x_h5(mdata, path: Path) -> None:
    """A Cell Ranger ARC ``filtered_feature_bc_matrix.h5`` of a MuData (features x barcodes CSC, gzip)."""
    X = sp.hstack([mdata.mod[m].X for m in ("rna", "atac") if m in mdata.mod]).tocsr()
    feats = feature_table(mdata)
    S = h5py.string_dtype("ascii", None)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        kw = {"compression": "gzip", "chunks": True}
        g.create_dataset("barcodes", data=np.asarray(mdata.obs_names).astype("S"), **kw)
        g.create_dataset("data", data=X.data.astype(np.int32), **kw)
        g.create_dataset("indices", data=X.indices.astype(np.int64), **kw)
        g.create_dataset("indptr", data=X.indptr.astype(np.int64), **kw)
        g.create_dataset("shape", data=np.array([X.shape[1], X.shape[0]], dtype=np.int32))
        fg = g.create_group("features")
        interval = (
            feats["chrom"] + ":" + feats["start"].astype(str) + "-" + feats["end"].astype(str)
        ).to_numpy()
        for key, values in (
            ("id", feats["id"]),
            ("name", feats["name"]),
            ("feature_type", feats["type"]),
            ("genome", np.full(len(feats), "GRCh38")),
            ("interval", interval),
        ):
            fg.create_dataset(key, data=np.asarray(values).astype("S"), **kw)
        fg.create_dataset("_all_tag_keys", data=np.array([b"genome", b"interval"]), dtype=S)


def write_mtx_dir(mdata, folder: Path) -> None:
    """A Cell Ranger ``filtered_feature_bc_matrix`` folder (matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz)."""
    from scipy.io import mmwrite

    folder.mkdir(parents=True, exist_ok=True)
    X = sp.hstack([mdata.mod[m].X for m in ("rna", "atac") if m in mdata.mod]).tocsr()
    buf = io.BytesIO()
    mmwrite(buf, sp.coo_matrix(X.T.astype(np.int64)), field="integer")
    (folder / "matrix.mtx.gz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    feats = feature_table(mdata)
    (folder / "features.tsv.gz").write_bytes(_gz(feats.to_csv(sep="\t", header=False, index=False)))
    (folder / "barcodes.tsv.gz").write_bytes(_gz("\n".join(map(str, mdata.obs_names)) + "\n"))


def write_tar(folder: Path, path: Path, arcname: str = "filtered_feature_bc_matrix") -> None:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)


# --------------------------------------------------------------------------------------------- bases
def build_bases(
    work: Path, formats: Path, snare: Path | None, *, n_cells: int = 300, n_frag: int = 6000, seed: int = 0
):
    """Write every seed file under ``work`` and read its reference; returns ``{name: Base}``."""
    import mudata as md

    from scclip.io import read

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bases: dict[str, Base] = {}

    def add(name, path, kind, groups=None, mdata=None):
        b = Base(name, Path(path), kind, groups or {})
        b.ref = mudata_ref(mdata if mdata is not None else read(path))
        bases[name] = b
        return b

    for name in ("pbmc10x_multiome_1k_subset.h5mu", "tenx_multiome_gex_10x10.h5", "tenx_atac_10x10.h5"):
        shutil.copy(formats / name, work / name)
    pbmc = add(
        "pbmc_h5mu", work / "pbmc10x_multiome_1k_subset.h5mu", "ad", {"rna": "mod/rna", "atac": "mod/atac"}
    )
    add("tenx_gex", work / "tenx_multiome_gex_10x10.h5", "tenx")
    add("tenx_atac", work / "tenx_atac_10x10.h5", "tenx")
    shutil.copy(formats / "tenx_mtx_10x10.tar.gz", work / "tenx_mtx_10x10.tar.gz")
    add("tenx_mtx_tar", work / "tenx_mtx_10x10.tar.gz", "tar")
    pm = read(pbmc.path)
    sub = pm[np.sort(rng.choice(pm.n_obs, 200, replace=False))].copy()
    write_10x_h5(sub, work / "pbmc_10x.h5")
    add("pbmc_10x", work / "pbmc_10x.h5", "tenx")
    write_mtx_dir(sub, work / "pbmc_mtx")
    add("pbmc_mtx", work / "pbmc_mtx", "mtx")
    write_tar(work / "pbmc_mtx", work / "pbmc_mtx.tar.gz")
    add("pbmc_mtx_tar", work / "pbmc_mtx.tar.gz", "tar")
    atac = sub["atac"].copy()
    atac.write_h5ad(work / "pbmc_atac.h5ad")
    add("pbmc_atac_h5ad", work / "pbmc_atac.h5ad", "ad", {"atac": ""})
    sub["rna"].copy().write_h5ad(work / "pbmc_rna.h5ad")
    add("pbmc_rna_h5ad", work / "pbmc_rna.h5ad", "ad", {"rna": ""})
    if snare is not None and snare.exists():
        sn = read(snare)
        sn = sn[np.sort(rng.choice(sn.n_obs, n_cells, replace=False))].copy()
        with md.set_options(pull_on_update=False):
            md.MuData({"rna": sn["rna"], "atac": sn["atac"]}).write_h5mu(work / "snare.h5mu")
        add("snare_h5mu", work / "snare.h5mu", "ad", {"rna": "mod/rna", "atac": "mod/atac"})
        sn["rna"].copy().write_h5ad(work / "snare_rna.h5ad")
        add("snare_rna_h5ad", work / "snare_rna.h5ad", "ad", {"rna": ""})
        sn["atac"].copy().write_h5ad(work / "snare_atac.h5ad")
        add("snare_atac_h5ad", work / "snare_atac.h5ad", "ad", {"atac": ""})
    _fragment_base(work, formats, sub, rng, n_frag, bases)
    rna, atac = (
        ("snare_rna_h5ad", "snare_atac_h5ad")
        if "snare_rna_h5ad" in bases
        else ("pbmc_rna_h5ad", "pbmc_atac_h5ad")
    )
    pair = Base("pair", bases[rna].path, "pair", {"rna": ""}, bases[rna].ref, {"atac": bases[atac]})
    bases["pair"] = pair
    return bases


def _fragment_base(work: Path, formats: Path, sub, rng, n_frag: int, bases: dict) -> None:
    """A BGZF subset of the real fragments file (lines of the 200 subset cells, kept in file order), counted onto
    the PBMC peaks: the reference of ``count_fragments`` and of an upload of RNA + fragments."""
    from scclip.fragments import count_fragments

    frags = pd.read_csv(
        formats / "pbmc10x_multiome_1k_subset_fragments.tsv.gz", sep="\t", header=None, comment="#"
    )
    frags = frags[frags[3].isin(set(sub.obs_names))]
    keep = np.sort(rng.choice(len(frags), min(n_frag, len(frags)), replace=False))
    text = frags.iloc[keep].to_csv(sep="\t", header=False, index=False)
    data, _ = bgzf(text.encode())
    path = work / "pbmc_fragments.tsv.gz"
    path.write_bytes(data)
    chrom, start, end = sub["atac"].var_names.str.extract(r"^(.+):(\d+)-(\d+)$").to_numpy().T
    peaks = (chrom.astype(str), start.astype(np.int64), end.astype(np.int64))
    counted = count_fragments(path, *peaks)
    base = Base("pbmc_fragments", path, "frag")
    base.ref = {"atac": modref(counted, False)}
    with_rna = count_fragments(path, *peaks, barcodes=sub["rna"].obs_names)
    base.extra = {
        "peaks": peaks,
        "rna_h5ad": work / "pbmc_rna.h5ad",
        "upload_ref": {"rna": bases["pbmc_rna_h5ad"].ref["rna"], "atac": modref(with_rna, False)},
    }
    bases["pbmc_fragments"] = base
