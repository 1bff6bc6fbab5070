"""Text and archive mutations for the reader fuzzing (issue 19): 10x Matrix Market folders and archives
(``mtx_*``), fragments files (``frag_*``), pairs of files (``pair_*``) and cuts at random offsets (``cut``).

Same contract as :mod:`fuzz_h5`: ``fn(rng, base, dst) -> Mutation``.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import anndata as ad
import numpy as np
from fuzz_bases import bgzf, canonical
from fuzz_h5 import Mutation, pick


# --------------------------------------------------------------------------------------------- Matrix Market
def _folder(base, dst: Path) -> tuple[Path, Path]:
    """A writable copy of the base's 10x folder under ``dst`` (extracted for archives): (root, matrix folder)."""
    root = dst / "folder"
    if base.kind == "tar":
        with tarfile.open(base.path) as tar:
            tar.extractall(root, filter="data")
    else:
        shutil.copytree(base.path, root)
    return root, next(p.parent for p in root.rglob("matrix.mtx*"))


def _finish(base, dst: Path, root: Path, mut: Mutation) -> Mutation:
    """Point the mutation at the folder, or re-pack it as the base's kind of archive."""
    if base.kind == "tar":
        out = dst / "matrix.tar.gz"
        with tarfile.open(out, "w:gz") as tar:
            for p in sorted(root.iterdir()):
                tar.add(p, arcname=p.name)
        mut.path = out
    else:
        mut.path = root
    return mut


def _read_text(p: Path) -> str:
    raw = p.read_bytes()
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


def _write_text(p: Path, text: str, gz: bool | None = None) -> None:
    gz = p.name.endswith(".gz") if gz is None else gz
    p.write_bytes(gzip.compress(text.encode(), mtime=0) if gz else text.encode())


def mtx_matrix(rng, base, dst):
    root, folder = _folder(base, dst)
    mpath = next(folder.glob("matrix.mtx*"))
    lines = _read_text(mpath).splitlines()
    h = next(i for i, ln in enumerate(lines) if not ln.startswith("%"))
    rows, cols, nnz = (int(x) for x in lines[h].split())
    how = pick(rng, ["dims", "dims", "banner", "banner", "entry", "entry", "plain", "crlf"])
    expect, text = "refuse", how
    if how == "dims":
        which = pick(
            rng,
            [
                "rows+1",
                "cols+1",
                "rows-1",
                "nnz+1",
                "nnz-1",
                "huge rows",
                "huge nnz",
                "negative",
                "text",
                "two numbers",
            ],
        )
        new = {"rows+1": f"{rows + 1} {cols} {nnz}", "cols+1": f"{rows} {cols + 1} {nnz}", "rows-1": f"{rows - 1} {cols} {nnz}",
               "nnz+1": f"{rows} {cols} {nnz + 1}", "nnz-1": f"{rows} {cols} {nnz - 1}", "huge rows": f"{10**12} {10**12} {nnz}",
               "huge nnz": f"{rows} {cols} {10**15}", "negative": f"-{rows} {cols} {nnz}", "text": f"{rows} x {nnz}",
               "two numbers": f"{rows} {cols}"}[which]  # fmt: skip
        if which == "nnz-1" and nnz == 0:
            new = f"{rows} {cols} 1"
        lines[h], text = new, f"size line {which}: {new!r}"
    elif how == "banner":
        which = pick(
            rng,
            [
                "real",
                "upper case",
                "pattern",
                "complex",
                "symmetric",
                "skew-symmetric",
                "array",
                "missing",
                "garbage",
            ],
        )
        banner = {"real": "%%MatrixMarket matrix coordinate real general",
                  "upper case": "%%MATRIXMARKET MATRIX COORDINATE INTEGER GENERAL",
                  "pattern": "%%MatrixMarket matrix coordinate pattern general",
                  "complex": "%%MatrixMarket matrix coordinate complex general",
                  "symmetric": "%%MatrixMarket matrix coordinate integer symmetric",
                  "skew-symmetric": "%%MatrixMarket matrix coordinate integer skew-symmetric",
                  "array": "%%MatrixMarket matrix array integer general",
                  "missing": "", "garbage": "%%NotMatrixMarket hello"}[which]  # fmt: skip
        lines[0], text = banner, f"banner {which}"
        if which in ("real", "upper case"):
            expect = "read" if which == "real" else "maybe"
        elif which in ("symmetric", "skew-symmetric") and nnz == 0 and rows == cols:
            expect = "maybe"
        elif which == "pattern" and nnz == 0:  # no entries: an empty pattern matrix is the same all-zero matrix
            expect = "maybe"
    elif how == "entry":
        if nnz == 0:
            lines.append(f"1 1 {pick(rng, ['-3', 'nan', '2'])}")
            text = "an entry beyond the declared count"
        else:
            k = h + 1 + int(rng.integers(nnz))
            i, j, v = lines[k].split()
            which = pick(
                rng,
                [
                    "row 0",
                    "row > rows",
                    "col > cols",
                    "negative",
                    "nan",
                    "text",
                    "extra field",
                    "missing field",
                ],
            )
            lines[k] = {"row 0": f"0 {j} {v}", "row > rows": f"{rows + 1} {j} {v}", "col > cols": f"{i} {cols + 5} {v}",
                        "negative": f"{i} {j} -{v}", "nan": f"{i} {j} nan", "text": f"{i} {j} many",
                        "extra field": f"{i} {j} {v} 7", "missing field": f"{i} {j}"}[which]  # fmt: skip
            text = f"entry {which}: {lines[k]!r}"
            if which == "extra field":  # the first three fields are intact: a reader may ignore the rest
                expect = "maybe"
    _write_text(mpath, ("\r\n" if how == "crlf" else "\n").join(lines) + "\n", gz=how != "plain" and None)
    if how in ("plain", "crlf"):
        expect, text = "maybe" if how == "plain" else "read", f"matrix {how} (named {mpath.name})"
    return _finish(base, dst, root, Mutation(f"mtx {text}", expect, base.ref))


def mtx_tables(rng, base, dst):
    root, folder = _folder(base, dst)
    fpath, bpath = next(folder.glob("features.tsv*")), next(folder.glob("barcodes.tsv*"))
    feats, bcs = _read_text(fpath).splitlines(), _read_text(bpath).splitlines()
    how = pick(rng, ["feature dropped", "feature added", "feature duplicated", "one column", "barcode dropped",
                     "barcode duplicated", "crlf barcodes", "plain features", "empty barcodes"])  # fmt: skip
    expect = "refuse"
    if how == "feature dropped":
        feats = feats[:-1]
    elif how == "feature added":
        feats.append(feats[-1].replace("\t", "_x\t", 1))
    elif how == "feature duplicated":
        feats[-1] = feats[0]
        expect = "maybe" if "Peaks" not in feats[0] else "refuse"  # RNA symbols may repeat when ids differ
        if expect == "maybe":
            expect = "valid"
    elif how == "one column":
        feats = [f.split("\t")[0] for f in feats]
        expect = "valid"
    elif how == "barcode dropped":
        bcs = bcs[:-1]
    elif how == "barcode duplicated":
        bcs[-1] = bcs[0]
    elif how == "empty barcodes":
        bcs = []
    _write_text(fpath, "\n".join(feats) + "\n", gz=how != "plain features" and None)
    _write_text(bpath, ("\r\n" if how == "crlf barcodes" else "\n").join(bcs) + ("\n" if bcs else ""))
    if how in ("crlf barcodes", "plain features"):
        expect = "read" if how == "crlf barcodes" else "maybe"
    return _finish(base, dst, root, Mutation(f"mtx {how}", expect, base.ref))


def tar_members(rng, base, dst):
    _root, folder = _folder(base, dst)
    how = pick(rng, ["traversal", "absolute", "symlink", "nested", "two folders", "empty"])
    out = dst / "matrix.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        if how != "empty":
            arc = {"nested": "outs/filtered_feature_bc_matrix", "two folders": "sample_a"}.get(
                how, "filtered_feature_bc_matrix"
            )
            tar.add(folder, arcname=arc)
        if how in ("traversal", "absolute"):
            info = tarfile.TarInfo("../evil.txt" if how == "traversal" else "/tmp/evil.txt")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif how == "symlink":
            info = tarfile.TarInfo("filtered_feature_bc_matrix/link")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        elif how == "two folders":  # neither named 'filtered': which one to read is unknowable
            tar.add(folder, arcname="sample_b")
    return Mutation(f"archive: {how}", "read" if how == "nested" else "refuse", base.ref, path=out)


# --------------------------------------------------------------------------------------------- fragments
def _frag_lines(base) -> list[str]:
    return gzip.decompress(base.path.read_bytes()).decode().splitlines()


def frag_lines(rng, base, dst):
    lines = _frag_lines(base)
    n = len(lines)
    k = rng.choice(n, min(n, int(rng.integers(1, 5))), replace=False)
    how = pick(rng, ["crlf", "unsorted", "ensembl chroms", "mixed chrom styles", "comments", "extra column",
                     "blank lines", "bom", "negative start", "end < start", "huge position", "no barcode",
                     "text position", "float position", "spaces not tabs", "empty", "only comments"])  # fmt: skip
    sep, expect = "\n", "read"
    fields = [ln.split("\t") for ln in lines]
    if how == "crlf":
        sep = "\r\n"
    elif how == "unsorted":
        fields = [fields[i] for i in rng.permutation(n)]
    elif how in ("ensembl chroms", "mixed chrom styles"):
        for i, f in enumerate(fields):
            if how == "ensembl chroms" or i % 2:
                f[0] = f[0][3:] if f[0].startswith("chr") else f[0]
    elif how == "comments":
        for i in sorted(k, reverse=True):
            fields.insert(int(i), ["# a comment line"])
    elif how == "extra column":
        fields = [[*f, "extra"] for f in fields]
    elif how == "blank lines":
        for i in sorted(k, reverse=True):
            fields.insert(int(i), [""])
    elif how == "empty":
        fields = []
    elif how == "only comments":
        fields = [["# comment"], ["# another"]]
    elif how == "bom":
        pass
    else:
        expect = "refuse"
        for i in k:
            f = fields[i]
            if how == "negative start":
                f[1] = "-" + f[1]
            elif how == "end < start":
                f[1], f[2] = f[2], f[1]
            elif how == "huge position":
                f[1], f[2] = str(2**41 + int(f[1])), str(2**41 + int(f[2]))
            elif how == "no barcode":
                fields[i] = f[:3]
            elif how == "text position":
                f[1] = "start"
            elif how == "float position":
                f[1] = f[1] + ".5"
            elif how == "spaces not tabs":
                fields[i] = [" ".join(f)]
    if how in ("empty", "only comments"):
        expect = "refuse"
    text = sep.join("\t".join(f) for f in fields) + (sep if fields else "")
    if how == "bom":
        text = "\ufeff" + text
    data, _ = bgzf(text.encode())
    path = dst / "pbmc_fragments.tsv.gz"
    path.write_bytes(data)
    return Mutation(f"fragments: {how} ({len(k)} lines)", expect, base.ref, path=path)


def frag_container(rng, base, dst):
    text = gzip.decompress(base.path.read_bytes())
    data, offsets = bgzf(text)
    how = pick(rng, ["plain named .tsv.gz", "plain .tsv", "gzip not bgzf", "bgzf cut at a block", "bgzf no eof block",
                     "cut anywhere", "flipped byte"])  # fmt: skip
    name, expect = "pbmc_fragments.tsv.gz", "refuse"
    if how == "plain named .tsv.gz":
        out, expect = text, "maybe"
    elif how == "plain .tsv":
        out, name, expect = text, "pbmc_fragments.tsv", "read"
    elif how == "gzip not bgzf":
        out, expect = gzip.compress(text, mtime=0), "read"
    elif how == "bgzf cut at a block":
        out = data[: offsets[int(rng.integers(1, len(offsets) - 1))]] if len(offsets) > 2 else data[:-40]
    elif how == "bgzf no eof block":
        out, expect = data[:-28], "maybe"
    elif how == "cut anywhere":
        out = data[: int(rng.integers(1, len(data) - 28))]
    else:
        raw = bytearray(data)
        raw[int(rng.integers(18, len(raw) - 28))] ^= int(rng.integers(1, 256))
        out, expect = bytes(raw), "valid"
    path = dst / name
    path.write_bytes(out)
    return Mutation(f"fragments file: {how}", expect, base.ref, path=path)


# --------------------------------------------------------------------------------------------- pairs and cuts
def pair_cells(rng, base, dst):
    """``base`` is the RNA h5ad; its ``extra['atac']`` the ATAC one of the same cells: read with read_pair."""
    atac_base = base.extra["atac"]
    atac = ad.read_h5ad(atac_base.path)
    how = pick(rng, ["shuffled", "half the cells", "suffix -2", "swapped files", "one cell shared"])
    ref = {"rna": base.ref["rna"], "atac": atac_base.ref["atac"]}
    expect, rna_path = "read", base.path
    if how == "shuffled":
        atac = atac[rng.permutation(atac.n_obs)].copy()
    elif how == "half the cells":
        keep = np.sort(rng.choice(atac.n_obs, atac.n_obs // 2, replace=False))
        atac = atac[keep].copy()
        rows = np.isin(ref["rna"].obs, atac.obs_names)
        ref = {m: replace(r, X=canonical(r.X[rows]), obs=r.obs[rows]) for m, r in ref.items()}
    elif how == "suffix -2":
        atac.obs_names = atac.obs_names.str.replace(r"-1$", "-2", regex=True).str.replace(
            r"^(?!.*-2$)(.*)$", r"\1-2", regex=True
        )
        expect = "refuse"
    elif how == "one cell shared":
        atac.obs_names = ["x" + s if i else s for i, s in enumerate(atac.obs_names)]
        rows = np.isin(ref["rna"].obs, atac.obs_names)
        ref = {m: replace(r, X=canonical(r.X[rows]), obs=r.obs[rows]) for m, r in ref.items()}
    atac_path = dst / "atac.h5ad"
    atac.write_h5ad(atac_path)
    if how == "swapped files":
        rna_path, atac_path, expect = atac_path, base.path, "refuse"
    return Mutation(f"pair: {how}", expect, ref, path=dst), (rna_path, atac_path)


def cut(rng, base, dst):
    """The file cut at a random offset (anywhere, or within its last 1 KB)."""
    src = base.path
    if src.is_dir():
        shutil.copytree(src, dst / "folder")
        src = dst / "folder" / pick(rng, sorted(p.name for p in src.iterdir()))
        target = src
    else:
        target = dst / src.name
    raw = src.read_bytes()
    at = (
        int(rng.integers(1, len(raw)))
        if rng.random() < 0.7
        else max(1, len(raw) - int(rng.integers(1, 1024)))
    )
    target.write_bytes(raw[:at])
    where = dst / "folder" if base.path.is_dir() else target
    return Mutation(f"{src.name} cut at byte {at} of {len(raw)}", "maybe", base.ref, path=where)


MTX_FAMILIES = {"mtx_matrix": (6, mtx_matrix), "mtx_tables": (4, mtx_tables), "cut": (2, cut)}
TAR_FAMILIES = {**MTX_FAMILIES, "tar_members": (2, tar_members)}
FRAG_FAMILIES = {"frag_lines": (7, frag_lines), "frag_container": (4, frag_container)}
