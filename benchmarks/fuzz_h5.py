"""HDF5 mutations for the reader fuzzing (issue 19): AnnData / MuData files (``ad_*``) and Cell Ranger ``.h5``
(``tenx_*``), edited in place with h5py on a copy of a seed file.

Every family is ``fn(rng, base, dst) -> Mutation``: it writes the mutated file to ``dst`` and says what reading it
must give (``expect``) and, where the content is known, the expected modalities (``ref``, computed here from the
mutated file's own arrays, independently of scclip's readers).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp
from fuzz_bases import Base, ModRef, canonical

#: must read, equal to ``ref``; may read (then equal to ``ref``) or be refused; must be refused; any valid
#: matrix or a refusal (content unknown, e.g. flipped bytes: shapes are checked).
EXPECTS = ("read", "maybe", "refuse", "valid")
HUGE = 2**34


@dataclass
class Mutation:
    text: str
    expect: str
    ref: dict[str, ModRef] | None = None
    path: Path | None = None
    mod: str | None = None  # the modality mutated, when one is


def pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _p(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


def replace_ds(f, path: str, data, **kw):
    attrs = dict(f[path].attrs) if path in f else {}
    if path in f:
        del f[path]
    ds = f.create_dataset(path, data=data, **kw)
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


def _encode(obj, kind: str, version: str = "0.2.0") -> None:
    obj.attrs["encoding-type"] = kind
    obj.attrs["encoding-version"] = version


def write_x(f, xpath: str, X) -> None:
    """Store ``X`` at ``xpath`` the way anndata does (CSR / CSC group, or a dense array)."""
    del f[xpath]
    if sp.issparse(X):
        g = f.create_group(xpath)
        _encode(g, f"{X.format}_matrix", "0.1.0")
        g.attrs["shape"] = np.array(X.shape)
        for key in ("data", "indices", "indptr"):
            g.create_dataset(key, data=getattr(X, key))
    else:
        _encode(f.create_dataset(xpath, data=X), "array")


def csr_parts(f, xpath: str):
    g = f[xpath]
    return g["data"][()], g["indices"][()], g["indptr"][()], tuple(int(s) for s in g.attrs["shape"])


def with_x(ref: dict[str, ModRef], mod: str, X) -> dict[str, ModRef]:
    return {**ref, mod: replace(ref[mod], X=canonical(X))}


# --------------------------------------------------------------------------------------------- AnnData files
def _start(rng, base: Base, dst: Path, mods=None):
    shutil.copy(base.path, dst)
    mod = pick(rng, sorted(mods or base.groups))
    return mod, _p(base.groups[mod], "X")


def ad_dtype(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    dtype = pick(
        rng, ["float16", "float64", "int8", "uint8", "int16", "int32", "int64", "uint16", "uint32", "bool"]
    )
    with h5py.File(dst, "r+") as f:
        data, indices, indptr, shape = csr_parts(f, xp)
        new = data != 0 if dtype == "bool" else data.astype(dtype)
        replace_ds(f, f"{xp}/data", new)
    exp = new.astype(np.float32)
    text = f"{mod} X/data stored as {dtype}"
    if not np.isfinite(exp).all() or (exp < 0).any():
        return Mutation(text + " (values wrap to negative / inf)", "refuse", mod=mod)
    expect = "maybe" if dtype == "float16" else "read"  # scipy has no sparse float16: a clear refusal is fine
    return Mutation(
        text, expect, with_x(base.ref, mod, sp.csr_matrix((exp, indices, indptr), shape=shape)), mod=mod
    )


def ad_strings(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    how = pick(rng, ["fixed", "vlen", "dense"])
    with h5py.File(dst, "r+") as f:
        data, indices, indptr, shape = csr_parts(f, xp)
        if how == "dense" and shape[0] * shape[1] > 200_000:  # millions of Python strings: slow to write
            how = "vlen"
        text = np.char.mod("%g", data)
        if how == "fixed":
            replace_ds(f, f"{xp}/data", text.astype("S"))
        elif how == "vlen":
            replace_ds(f, f"{xp}/data", text.astype(object), dtype=h5py.string_dtype())
        else:
            dense = np.char.mod("%g", sp.csr_matrix((data, indices, indptr), shape=shape).toarray())
            del f[xp]
            _encode(
                f.create_dataset(xp, data=dense.astype(object), dtype=h5py.string_dtype()), "string-array"
            )
    return Mutation(f"{mod} X holds numbers as {how} strings", "refuse", mod=mod)


def ad_layout(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    how = pick(rng, ["csc", "dense-float32", "dense-int32", "dense-float64", "dense-uint16"])
    with h5py.File(dst, "r+") as f:
        data, indices, indptr, shape = csr_parts(f, xp)
        X = sp.csr_matrix((data, indices, indptr), shape=shape)
        write_x(f, xp, X.tocsc() if how == "csc" else X.toarray().astype(how.split("-")[1]))
    return Mutation(f"{mod} X stored {how}", "read", with_x(base.ref, mod, X), mod=mod)


def _obs_paths(f, base: Base) -> list[str]:
    out = []
    for prefix in ({"mod/rna", "mod/atac"} & set(base.groups.values()) and ["", *base.groups.values()]) or [
        ""
    ]:
        g = f[_p(prefix, "obs")]
        out.append(_p(prefix, "obs") + "/" + g.attrs.get("_index", "_index"))
    return out


def ad_obs(rng, base, dst):
    shutil.copy(base.path, dst)
    how = pick(rng, ["duplicate", "integers", "empty", "non-utf8", "floats-with-nan", "one-empty"])
    with h5py.File(dst, "r+") as f:
        paths = _obs_paths(f, base)
        names = f[paths[0]].asstr()[()].astype(object)
        n = len(names)
        i, j = (int(x) for x in rng.choice(n, 2, replace=False))
        if how == "duplicate":
            names[j] = names[i]
        for p in paths:
            if how in ("duplicate", "empty", "one-empty"):
                new = names.copy()
                new[: n if how == "empty" else 0] = ""
                if how == "one-empty":
                    new[i] = ""
                replace_ds(f, p, new, dtype=h5py.string_dtype())
            elif how == "integers":
                _encode(replace_ds(f, p, np.arange(n, dtype=np.int64) + 1000), "array")
            elif how == "non-utf8":
                replace_ds(f, p, np.array([b"\xff\xfe" + str(s).encode() for s in names]))
            else:
                vals = np.arange(n, dtype=np.float64) + 0.5
                vals[i] = np.nan
                _encode(replace_ds(f, p, vals), "array")
    text = f"obs_names: {how}"
    if how in ("duplicate", "empty"):
        return Mutation(text, "refuse")
    if how == "integers":
        names = np.char.mod("%d", np.arange(n) + 1000)
        return Mutation(text, "maybe", {m: replace(r, obs=names) for m, r in base.ref.items()})
    return Mutation(text, "valid")


def ad_shape(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    with h5py.File(dst, "r+") as f:
        n, m = (int(s) for s in f[xp].attrs["shape"])
        variants = {
            "rows+1": (n + 1, m),
            "rows-1": (n - 1, m),
            "cols+1": (n, m + 1),
            "cols-1": (n, m - 1),
            "swapped": (m, n),
            "huge rows": (2**40, m),
            "huge cols": (n, 2**40),
            "huge both": (2**62, 2**62),
            "negative": (-1, m),
            "1-d": (n,),
            "3-d": (n, m, 1),
            "zero": (0, 0),
        }
        how = pick(rng, sorted(variants))
        if how == "swapped" and n == m:
            how = "huge cols"
        f[xp].attrs["shape"] = np.array(variants[how])
        if how == "cols-1" and not base.groups[mod]:  # a consistent AnnData whose indices overflow the shape
            _trim_var(f, base.groups[mod], m - 1)
            if not (f[f"{xp}/indices"][()] == m - 1).any():  # the last feature had no counts: a valid matrix
                r = base.ref[mod]
                ref = {mod: replace(r, X=canonical(r.X[:, : m - 1]), var=r.var[: m - 1])}
                return Mutation(f"{mod} X shape and var without the empty last feature", "read", ref, mod=mod)
            how += " (var trimmed to match)"
    return Mutation(f"{mod} X shape attribute: {how}", "refuse", mod=mod)


def _trim_var(f, prefix: str, k: int) -> None:
    from anndata.io import read_elem, write_elem

    vp = _p(prefix, "var")
    var = read_elem(f[vp]).iloc[:k]
    del f[vp]
    write_elem(f, vp, var)


def ad_huge(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    target = pick(rng, ["X/data", "X/indices", "X/indptr", "dense X", "obs index", "var column", "uns array"])
    with h5py.File(dst, "r+") as f:
        n, _m = (int(s) for s in f[xp].attrs["shape"])
        chunk = {"chunks": (2**20,), "maxshape": (None,)}
        if target in ("X/data", "X/indices", "X/indptr"):
            dt = f[f"{xp}/{target[2:]}"].dtype
            del f[f"{xp}/{target[2:]}"]
            f.create_dataset(f"{xp}/{target[2:]}", shape=(HUGE,), dtype=dt, **chunk)
        elif target == "dense X":
            del f[xp]
            _encode(f.create_dataset(xp, shape=(n, 2**40), dtype="f4", chunks=(1, 2**20)), "array")
        elif target == "obs index":
            p = _obs_paths(f, base)[-1]
            del f[p]
            ds = f.create_dataset(p, shape=(HUGE,), dtype=h5py.string_dtype(), **chunk)
            _encode(ds, "string-array")
        elif target == "var column":
            _encode(
                f.create_dataset(_p(base.groups[mod], "var") + "/huge", shape=(HUGE,), dtype="i8", **chunk),
                "array",
            )
            cols = list(f[_p(base.groups[mod], "var")].attrs["column-order"])
            f[_p(base.groups[mod], "var")].attrs["column-order"] = np.array(
                [*map(str, cols), "huge"], dtype=object
            )
        else:
            uns = f.require_group(_p(base.groups[mod], "uns"))
            _encode(uns.create_dataset("huge", shape=(HUGE,), dtype="f8", **chunk), "array")
    return Mutation(f"{mod}: {target} declared with 2^34+ elements but stores none", "refuse", mod=mod)


def ad_indptr(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    how = pick(rng, ["decreasing", "last>nnz", "first!=0", "huge", "negative", "short", "float"])
    with h5py.File(dst, "r+") as f:
        indptr = f[f"{xp}/indptr"][()].astype(np.int64)
        i = int(rng.integers(1, len(indptr) - 1))
        if how == "decreasing":
            indptr[i] = indptr[i + 1] + 1
        elif how == "last>nnz":
            indptr[-1] += int(rng.integers(1, 1000))
        elif how == "first!=0":
            indptr[0] = 1
        elif how == "huge":
            indptr[i:] = 2**31 - 1
        elif how == "negative":
            indptr[i] = -5
        elif how == "short":
            indptr = indptr[:-1]
        replace_ds(f, f"{xp}/indptr", indptr.astype(np.float64) + 0.5 if how == "float" else indptr)
    return Mutation(f"{mod} X/indptr: {how}", "refuse", mod=mod)


def ad_indices(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    how = pick(rng, ["= n_vars", "> n_vars", "negative", "int32 max", "shuffled within rows"])
    with h5py.File(dst, "r+") as f:
        data, indices, indptr, shape = csr_parts(f, xp)
        indices = indices.astype(np.int64)
        k = rng.choice(len(indices), min(len(indices), int(rng.integers(1, 4))), replace=False)
        values = {"= n_vars": shape[1], "> n_vars": shape[1] + 1000, "negative": -1, "int32 max": 2**31 - 1}
        if how in values:
            indices[k] = values[how]
        else:
            for r in rng.choice(shape[0], min(shape[0], 50), replace=False):
                lo, hi = indptr[r], indptr[r + 1]
                perm = lo + rng.permutation(hi - lo)
                indices[lo:hi], data[lo:hi] = indices[perm], data[perm]
            replace_ds(f, f"{xp}/data", data)
        replace_ds(f, f"{xp}/indices", indices.astype(np.int32 if how != "int32 max" else np.int64))
    if how == "shuffled within rows":
        return Mutation(
            f"{mod} X/indices {how}",
            "read",
            with_x(base.ref, mod, sp.csr_matrix((data, indices, indptr), shape=shape)),
            mod=mod,
        )
    return Mutation(f"{mod} X/indices: {len(k)} set {how}", "refuse", mod=mod)


def ad_lengths(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    how = pick(rng, ["data short", "indices short", "both long"])
    with h5py.File(dst, "r+") as f:
        data, indices, _, _ = csr_parts(f, xp)
        if how != "indices short":
            replace_ds(f, f"{xp}/data", data[:-1] if how == "data short" else np.r_[data, data[:5]])
        if how != "data short":
            replace_ds(
                f, f"{xp}/indices", indices[:-1] if how == "indices short" else np.r_[indices, indices[:5]]
            )
    # arrays longer than indptr[-1]: the matrix is still well defined (scipy ignores the tail)
    return Mutation(f"{mod} X: {how}", "maybe" if how == "both long" else "refuse", base.ref, mod=mod)


def ad_values(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    how = pick(rng, ["nan", "inf", "negative", "-inf", "huge 1e30", "half"])
    with h5py.File(dst, "r+") as f:
        data, indices, indptr, shape = csr_parts(f, xp)
        data = data.astype(np.float32)
        k = rng.choice(len(data), min(len(data), int(rng.integers(1, 4))), replace=False)
        data[k] = {
            "nan": np.nan,
            "inf": np.inf,
            "negative": -3,
            "-inf": -np.inf,
            "huge 1e30": 1e30,
            "half": 0.5,
        }[how]
        replace_ds(f, f"{xp}/data", data)
    text = f"{mod} X/data: {len(k)} values set to {how}"
    if how in ("huge 1e30", "half"):
        return Mutation(
            text, "read", with_x(base.ref, mod, sp.csr_matrix((data, indices, indptr), shape=shape)), mod=mod
        )
    return Mutation(text, "refuse", mod=mod)


PEAK_STYLES = [(":", "-"), ("-", "-"), ("_", "_"), (":", ":"), (" ", " ")]
_CASES = {
    "upper": str.upper,
    "lower": str.lower,
    "title": str.title,
    "no-chr": lambda c: c[3:] if c.startswith("chr") else c,
}


def peak_names(rng, chrom, start, end) -> tuple[np.ndarray, str]:
    """The peaks written in one separator style (or each in its own), with spaces, case changes or commas."""
    mixed, style = rng.random() < 0.25, int(rng.integers(len(PEAK_STYLES)))
    spaces, case = pick(rng, ["", "outer", "around separators"]), pick(rng, ["", *sorted(_CASES)])
    commas = rng.random() < 0.15
    out = []
    for c, s, e in zip(chrom, start, end, strict=True):
        a, b = PEAK_STYLES[int(rng.integers(len(PEAK_STYLES))) if mixed else style]
        if case and re.match(r"^chr([0-9]+|[XYM])$", c):
            c = _CASES[case](c)
        s, e = (f"{s:,}", f"{e:,}") if commas else (str(s), str(e))
        if spaces == "around separators":
            a, b = f" {a.strip()} ", f" {b.strip()} "
        name = f"{c}{a}{s}{b}{e}"
        out.append(f" {name} " if spaces == "outer" else name)
    what = "mixed" if mixed else repr("".join(PEAK_STYLES[style]))
    return np.array(
        out, dtype=object
    ), f"style {what}, spaces {spaces or 'none'}, case {case or 'kept'}, commas {commas}"


def ad_peaks(rng, base, dst):
    from anndata.io import read_elem, write_elem

    if "atac" not in base.groups:
        return ad_dtype(rng, base, dst)
    mod, _ = _start(rng, base, dst, ["atac"])
    ref = base.ref["atac"]
    names, how = peak_names(rng, *ref.coords)
    with h5py.File(dst, "r+") as f:
        vp = _p(base.groups["atac"], "var")
        var = read_elem(f[vp])
        old = np.asarray(var.index).astype(str)
        var = var.drop(columns=[c for c in ("interval", "chrom", "start", "end") if c in var.columns])
        var.index = names
        del f[vp]
        write_elem(f, vp, var)
        if base.groups["atac"]:  # the MuData-level var names
            gnames = f["var/_index"].asstr()[()].astype(object)
            lookup = dict(zip(old, names, strict=True))
            replace_ds(
                f,
                "var/_index",
                np.array([lookup.get(g, g) for g in gnames], dtype=object),
                dtype=h5py.string_dtype(),
            )
    return Mutation(
        f"atac peak names rewritten ({how}), coordinate columns dropped",
        "read",
        {**base.ref, "atac": replace(ref, var=names.astype(str))},
        mod=mod,
    )


def ad_genome(rng, base, dst):
    from anndata.io import read_elem, write_elem

    mod, _ = _start(rng, base, dst)
    how = pick(
        rng, ["half mm10", "whole modality mm10", "GRCh38 and GRCh38-2020-A", "GRCh38 and a custom name"]
    )
    with h5py.File(dst, "r+") as f:
        vp = _p(base.groups[mod], "var")
        var = read_elem(f[vp])
        n = len(var)
        first = var["genome"].astype(str).to_numpy() if "genome" in var else np.full(n, "GRCh38")
        other = {
            "half mm10": "mm10",
            "whole modality mm10": "mm10",
            "GRCh38 and GRCh38-2020-A": "GRCh38-2020-A",
        }
        new = first.astype(object)
        new[n // 2 :] = other.get(how, "my_assembly_v1")
        if how == "whole modality mm10":
            new[:] = "mm10"
        var["genome"] = new
        del f[vp]
        write_elem(f, vp, var)
    text = f"{mod} var['genome']: {how}"
    with h5py.File(dst, "r") as f:  # a conflict needs another modality that declares its own assembly
        others = [m for m in base.groups if m != mod and "genome" in f[_p(base.groups[m], "var")]]
    if how == "half mm10" or (how == "whole modality mm10" and others):
        return Mutation(text, "refuse", mod=mod)
    if how == "whole modality mm10":
        return Mutation(text, "maybe", base.ref, mod=mod)
    return Mutation(text, "read", base.ref, mod=mod)


def ad_drop(rng, base, dst):
    mod, xp = _start(rng, base, dst)
    what = pick(rng, ["X", "obs", "var", "obs index", "modality", "X encoding", "obs encoding"])
    prefix = base.groups[mod]
    with h5py.File(dst, "r+") as f:
        if what == "X":
            del f[xp]
        elif what in ("obs", "var"):
            del f[_p(prefix, what)]
        elif what == "obs index":
            del f[_obs_paths(f, base)[-1]]
        elif what == "modality" and prefix:
            del f[prefix]
        elif what == "X encoding":
            f[xp].attrs["encoding-type"] = pick(rng, ["csr_matrx", "dataframe", "array", ""])
        else:
            f[_p(prefix, "obs")].attrs["encoding-type"] = "csr_matrix"
    return Mutation(f"{mod}: {what} removed or mislabelled", "refuse" if what == "X" else "valid", mod=mod)


def ad_modkey(rng, base, dst):
    if "mod/rna" not in base.groups.values():
        return ad_layout(rng, base, dst)
    mod, _ = _start(rng, base, dst)
    new = pick(rng, {"rna": ["gex", "RNA", "Gene Expression"], "atac": ["peaks", "ATAC", "chromatin"]}[mod])
    with h5py.File(dst, "r+") as f:
        f.move(f"mod/{mod}", f"mod/{new}")
        for g in ("obsm", "varm"):
            if g in f and mod in f[g]:
                f.move(f"{g}/{mod}", f"{g}/{new}")
        if "mod-order" in f["mod"].attrs:
            order = [new if str(k) == mod else str(k) for k in f["mod"].attrs["mod-order"]]
            f["mod"].attrs["mod-order"] = np.array(order, dtype=object)
    return Mutation(f"modality {mod!r} renamed {new!r}", "read", base.ref, mod=mod)


# --------------------------------------------------------------------------------------------- Cell Ranger .h5
def tenx_expected(path: Path, base: Base) -> dict[str, ModRef]:
    """The modalities a Cell Ranger .h5 holds, from its own arrays (barcodes x features, split by type)."""
    with h5py.File(path, "r") as f:
        g = f["matrix"]
        n_feat, n_cells = (int(x) for x in g["shape"][()])
        X = sp.csr_matrix(
            (g["data"][()].astype(np.float32), g["indices"][()], g["indptr"][()]), shape=(n_cells, n_feat)
        )
        types = np.char.lower(g["features/feature_type"][()].astype(str))
    out = {}
    for mod, kind in (("rna", "gene expression"), ("atac", "peaks")):
        if mod in base.ref:
            out[mod] = replace(base.ref[mod], X=canonical(X[:, np.flatnonzero(types == kind)]))
    return out


def tenx_data(rng, base, dst):
    shutil.copy(base.path, dst)
    how = pick(rng, ["dtype", "indptr", "indices", "lengths", "values", "shape", "barcodes", "huge"])
    with h5py.File(dst, "r+") as f:
        g = f["matrix"]
        n_feat, n_cells = (int(x) for x in g["shape"][()])
        data, indices, indptr = (
            g["data"][()],
            g["indices"][()].astype(np.int64),
            g["indptr"][()].astype(np.int64),
        )
        detail, expect = _tenx_edit(rng, g, how, data, indices, indptr, n_feat, n_cells)
    mut = Mutation(f"10x {how}: {detail}", expect)
    if expect == "read":
        mut.ref = tenx_expected(dst, base)
    return mut


def _tenx_edit(rng, g, how, data, indices, indptr, n_feat, n_cells) -> tuple[str, str]:
    i = int(rng.integers(len(indptr) - 1))
    if how == "dtype":
        dt = pick(rng, ["float16", "float64", "int8", "uint16", "int64", "bool"])
        replace_ds(g.file, "matrix/data", data.astype(dt) if dt != "bool" else data != 0, compression="gzip")
        stored = g["data"][()].astype(np.float32)
        return dt, "read" if np.isfinite(stored).all() and (stored >= 0).all() else "refuse"
    if how == "indptr":
        which = pick(rng, ["decreasing", "last>nnz", "huge", "short"])
        if which == "decreasing":
            indptr[i] = indptr[i + 1] + 1 if indptr[i + 1] < 2**31 else 0
            indptr[0] = 0 if i else 1
        elif which == "last>nnz":
            indptr[-1] += 7
        elif which == "huge":
            indptr[i + 1 :] = 2**40
        replace_ds(g.file, "matrix/indptr", indptr[:-1] if which == "short" else indptr)
        return which, "refuse"
    if how == "indices":
        if not len(indices):
            return tenx_shape(rng, g, n_feat, n_cells)
        indices[int(rng.integers(len(indices)))] = pick(rng, [n_feat, n_feat + 99, -1, 2**40])
        replace_ds(g.file, "matrix/indices", indices)
        return "one index out of range", "refuse"
    if how == "lengths":
        replace_ds(g.file, "matrix/data", np.r_[data, data[:1], 1].astype(data.dtype))
        return "data longer than indices", "refuse"
    if how == "values":
        if not len(data):
            return tenx_shape(rng, g, n_feat, n_cells)
        v = pick(rng, [-1, -100])
        replace_ds(g.file, "matrix/data", np.r_[v, data[1:]].astype(np.int32))
        return f"a count set to {v}", "refuse"
    if how == "shape":
        return tenx_shape(rng, g, n_feat, n_cells)
    if how == "barcodes":
        bc = g["barcodes"][()]
        bc[-1] = bc[0]
        replace_ds(g.file, "matrix/barcodes", bc)
        return "a duplicated barcode", "refuse"
    key = pick(rng, ["data", "indices", "barcodes", "features/id"])
    dt = g[key].dtype
    del g[key]
    g.create_dataset(key, shape=(HUGE,), dtype=dt, chunks=(2**20,))
    return f"{key} declared with 2^34 elements, none stored", "refuse"


def tenx_shape(rng, g, n_feat, n_cells) -> tuple[str, str]:
    variants = {"features+1": [n_feat + 1, n_cells], "cells+1": [n_feat, n_cells + 1], "huge": [2**40, 2**40],
                "negative": [-1, n_cells], "one number": [n_feat], "swapped": [n_cells, n_feat + 3]}  # fmt: skip
    which = pick(rng, sorted(variants))
    replace_ds(g.file, "matrix/shape", np.array(variants[which], dtype=np.int64))
    return f"shape {which}", "refuse"


def tenx_features(rng, base, dst):
    shutil.copy(base.path, dst)
    how = pick(rng, ["drop", "drop", "types case", "unknown type", "genome mix", "peak names"])
    with h5py.File(dst, "r+") as f:
        fg = f["matrix/features"]
        types = fg["feature_type"][()].astype(str)
        if how == "drop":
            key = pick(
                rng,
                [
                    "interval",
                    "barcodes",
                    "name",
                    "id",
                    "feature_type",
                    "genome",
                    "_all_tag_keys",
                    "data",
                    "indptr",
                    "shape",
                ],
            )
            target = (
                f"matrix/{key}"
                if key in ("barcodes", "data", "indptr", "shape")
                else f"matrix/features/{key}"
            )
            if target in f:
                del f[target]
            readable = key in ("interval", "feature_type", "genome", "_all_tag_keys")
            return Mutation(f"10x {target} removed", "read" if readable else "refuse", base.ref)
        if how == "types case":
            replace_ds(f, "matrix/features/feature_type", np.char.upper(types).astype("S"))
            return Mutation("10x feature types upper-cased", "read", base.ref)
        if how == "unknown type":
            types[0] = "Antibody Capture"
            replace_ds(f, "matrix/features/feature_type", types.astype("S"))
            return Mutation("10x first feature of type Antibody Capture", "valid")
        if how == "genome mix":
            gen = np.full(len(types), "GRCh38", dtype=object)
            gen[len(gen) // 2 :] = "mm10"
            replace_ds(f, "matrix/features/genome", gen.astype("S"))
            return Mutation(
                "10x features/genome: half GRCh38, half mm10",
                "refuse" if len(types) > 1 else "maybe",
                base.ref,
            )
        if "atac" not in base.ref:
            return Mutation("10x unchanged (no peaks to rename)", "read", base.ref)
        names = fg["name"][()].astype(str).astype(object)
        peaks = np.flatnonzero(np.char.lower(types) == "peaks")
        new, style = peak_names(rng, *base.ref["atac"].coords)
        names[peaks] = new
        replace_ds(f, "matrix/features/name", np.array([str(n).encode() for n in names]))
        if "interval" in fg:
            del fg["interval"]
    return Mutation(
        f"10x peak names rewritten ({style}), interval removed",
        "read",
        {**base.ref, "atac": replace(base.ref["atac"], var=new.astype(str))},
    )


# --------------------------------------------------------------------------------------------- any HDF5
def dataset_extents(path: Path) -> list[tuple[str, int, int]]:
    """(dataset, byte offset, byte size) of every stored dataset or chunk in an HDF5 file."""
    out: list[tuple[str, int, int]] = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        dsid = obj.id
        if obj.chunks is None:
            off, size = dsid.get_offset(), dsid.get_storage_size()
            if off is not None and size:
                out.append((name, int(off), int(size)))
        else:
            for i in range(dsid.get_num_chunks()):
                info = dsid.get_chunk_info(i)
                out.append((f"{name}[chunk {i}]", int(info.byte_offset), int(info.size)))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def h5_flip(rng, base, dst):
    shutil.copy(base.path, dst)
    extents = dataset_extents(dst)
    name, off, size = pick(rng, extents)
    k = int(pick(rng, [1, 1, 4, 16]))
    raw = bytearray(dst.read_bytes())
    where = off + rng.choice(size, min(k, size), replace=False)
    for w in where:
        raw[int(w)] ^= int(rng.integers(1, 256))
    dst.write_bytes(bytes(raw))
    return Mutation(f"{len(where)} bytes flipped in {name} at {sorted(int(w) for w in where)[:4]}", "valid")


def h5_cut(rng, base, dst):
    """The file cut at a random offset (anywhere, or within its last 1 KB)."""
    raw = Path(base.path).read_bytes()
    at = (
        int(rng.integers(1, len(raw)))
        if rng.random() < 0.7
        else max(1, len(raw) - int(rng.integers(1, 1024)))
    )
    dst.write_bytes(raw[:at])
    return Mutation(f"{dst.name} cut at byte {at} of {len(raw)}", "maybe", base.ref)


AD_FAMILIES = {
    "h5_cut": (3, h5_cut),
    "ad_dtype": (3, ad_dtype),
    "ad_strings": (2, ad_strings),
    "ad_layout": (3, ad_layout),
    "ad_obs": (3, ad_obs),
    "ad_shape": (3, ad_shape),
    "ad_huge": (3, ad_huge),
    "ad_indptr": (2, ad_indptr),
    "ad_indices": (3, ad_indices),
    "ad_lengths": (1, ad_lengths),
    "ad_values": (2, ad_values),
    "ad_peaks": (4, ad_peaks),
    "ad_genome": (2, ad_genome),
    "ad_drop": (2, ad_drop),
    "ad_modkey": (1, ad_modkey),
    "h5_flip": (6, h5_flip),
}
TENX_FAMILIES = {
    "h5_cut": (2, h5_cut),
    "tenx_data": (6, tenx_data),
    "tenx_features": (5, tenx_features),
    "h5_flip": (4, h5_flip),
}
