"""Fuzzing the readers (issue 19): mutated files end in a correct read or one clear ``ScclipError`` line.

Two parts:

* tiny synthetic files (no real data needed), one test per class of damage the fuzzing found: sparse indices out
  of range, huge declared shapes over tiny data, text matrices, incomplete Cell Ranger files, Matrix Market files
  with a wrong banner or size line, fragments files that are cut short, plain, Ensembl-named or malformed, mixed
  assemblies, peak names in every separator style;
* a seeded subset of ``benchmarks/fuzz.py`` on the real files in ``../shared/data`` (``@pytest.mark.realdata``),
  each case in a forked child so that a crash, a hang or a memory blow-up is counted, not fatal. The long run:
  ``python benchmarks/fuzz.py --cases 2000`` (docs/reliability.md).
"""

from __future__ import annotations

import gzip
import os
import signal
import sys
import time
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scclip.errors import ScclipError
from scclip.features import var_intervals
from scclip.fragments import count_fragments
from scclip.genome import parse_intervals
from scclip.io import read

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fuzz_runner
from fuzz_bases import BGZF_EOF, Base, bgzf, build_bases, write_10x_h5
from fuzz_runner import Case, make_case, run_isolated

RNG = np.random.default_rng(0)


def _refused(call, *words) -> str:
    with pytest.raises(ScclipError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg and msg.strip(), msg
    for w in words:
        assert w in msg, msg
    return msg


def _counts(n=30, m=12, density=0.3) -> sp.csr_matrix:
    X = sp.random(n, m, density=density, random_state=1, format="csr", dtype=np.float32)
    X.data = np.ceil(X.data * 9)
    return X


def _peaks(m: int) -> list[str]:
    return [f"chr{1 + i % 3}:{1000 * (i + 1)}-{1000 * (i + 1) + 500}" for i in range(m)]


def _h5ad(tmp_path, *, atac=False, name="cells.h5ad") -> tuple[Path, ad.AnnData]:
    X = _counts()
    var = pd.DataFrame(index=_peaks(X.shape[1]) if atac else [f"Gene{i}" for i in range(X.shape[1])])
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"BC{i}-1" for i in range(X.shape[0])]), var=var)
    a.write_h5ad(tmp_path / name)
    return tmp_path / name, a


# --------------------------------------------------------------------------------------------- HDF5 structure
@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda f: f["X/indices"].__setitem__(0, 12), ["damaged", "indices run from"]),
        (lambda f: f["X/indices"].__setitem__(1, -1), ["damaged", "indices run from"]),
        (lambda f: f["X/indptr"].__setitem__(3, 10**6), ["damaged", "indptr"]),
        (lambda f: f["X"].attrs.__setitem__("shape", np.array([30, 2**40])), ["Could not read"]),
    ],
    ids=["index-past-the-shape", "negative-index", "indptr-past-the-data", "huge-declared-columns"],
)
def test_sparse_structure_that_disagrees_with_the_shape_is_refused(tmp_path, edit, words):
    path, _ = _h5ad(tmp_path)
    with h5py.File(path, "r+") as f:
        edit(f)
    _refused(lambda: read(path, modality="rna"), *words)


@pytest.mark.parametrize("target", ["X/data", "X/indices", "obs/_index", "uns/blob"])
def test_huge_declared_datasets_over_tiny_data_are_refused_before_reading(tmp_path, target):
    path, _ = _h5ad(tmp_path)
    with h5py.File(path, "r+") as f:
        dt = f[target].dtype if target in f else np.float64
        if target in f:
            del f[target]
        ds = f.create_dataset(
            target, shape=(2**34,), dtype=h5py.string_dtype() if "obs" in target else dt, chunks=(2**20,)
        )
        ds.attrs["encoding-type"], ds.attrs["encoding-version"] = (
            ("string-array" if "obs" in target else "array"),
            "0.2.0",
        )
    # were the shape not checked first, reading would allocate 64+ GB here (MemoryError, not ScclipError)
    _refused(lambda: read(path, modality="rna"), "damaged", target)


@pytest.mark.parametrize("how", ["fixed", "vlen"])
def test_a_matrix_of_text_is_refused(tmp_path, how):
    path, _a = _h5ad(tmp_path)
    with h5py.File(path, "r+") as f:
        text = np.char.mod("%g", f["X/data"][()])
        del f["X/data"]
        if how == "fixed":
            f.create_dataset("X/data", data=text.astype("S"))
        else:
            f.create_dataset("X/data", data=text.astype(object), dtype=h5py.string_dtype())
    _refused(lambda: read(path, modality="rna"), "holds text", "not counts")


@pytest.mark.parametrize("fmt", ["csc", "dense"])
def test_csc_and_dense_matrices_read_as_the_same_counts(tmp_path, fmt):
    _path, a = _h5ad(tmp_path)
    b = a.copy()
    b.X = a.X.tocsc() if fmt == "csc" else a.X.toarray()
    b.write_h5ad(tmp_path / "other.h5ad")
    X = read(tmp_path / "other.h5ad", modality="rna")["rna"].X
    assert sp.isspmatrix_csr(X) and (X != a.X).nnz == 0


def test_an_unknown_encoding_is_refused_in_one_line(tmp_path):
    path, _ = _h5ad(tmp_path)
    with h5py.File(path, "r+") as f:
        f["obs"].attrs["encoding-type"] = "csr_matrix"
    _refused(lambda: read(path, modality="rna"), "Could not read", "IORegistryError")


# --------------------------------------------------------------------------------------------- 10x
def _tenx(tmp_path, *, atac=True) -> tuple[Path, md.MuData]:
    X = _counts(20, 8)
    rna = ad.AnnData(X[:, :4], obs=pd.DataFrame(index=[f"AAAC{i}-1" for i in range(20)]),
                     var=pd.DataFrame({"gene_ids": [f"ENSG0000000000{i}" for i in range(4)]}, index=[f"G{i}" for i in range(4)]))  # fmt: skip
    mods = {"rna": rna}
    if atac:
        mods["atac"] = ad.AnnData(X[:, 4:], obs=rna.obs.copy(), var=pd.DataFrame(index=_peaks(4)))
    mdata = md.MuData(mods)
    write_10x_h5(mdata, tmp_path / "filtered_feature_bc_matrix.h5")
    return tmp_path / "filtered_feature_bc_matrix.h5", mdata


@pytest.mark.parametrize("key", ["matrix/barcodes", "matrix/indptr", "matrix/features/name"])
def test_a_cell_ranger_file_without_a_dataset_names_it(tmp_path, key):
    path, _ = _tenx(tmp_path)
    with h5py.File(path, "r+") as f:
        del f[key]
    _refused(lambda: read(path), key.split("/")[-1], "incomplete")


def test_a_cell_ranger_file_without_feature_types_still_splits_genes_from_peaks(tmp_path):
    path, mdata = _tenx(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["matrix/features/feature_type"], f["matrix/features/interval"]
    got = read(path)
    assert set(got.mod) == {"rna", "atac"}
    assert list(got["atac"].var_names) == list(mdata["atac"].var_names)
    assert (got["atac"].X != mdata["atac"].X).nnz == 0


def test_a_cell_ranger_index_out_of_range_is_refused(tmp_path):
    path, _ = _tenx(tmp_path)
    with h5py.File(path, "r+") as f:
        idx = f["matrix/indices"][()]
        idx[0] = 8
        del f["matrix/indices"]
        f["matrix/indices"] = idx
    _refused(lambda: read(path), "damaged", "indices")


def test_two_assemblies_in_one_file_are_refused_but_two_names_of_one_are_not(tmp_path):
    path, _mdata = _tenx(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["matrix/features/genome"]
        f["matrix/features/genome"] = np.array([b"GRCh38"] * 6 + [b"mm10"] * 2)  # the peaks mix the two
    _refused(lambda: read(path), "several assemblies", "hg38: 2", "mm10: 2")
    with h5py.File(path, "r+") as f:
        del f["matrix/features/genome"]
        f["matrix/features/genome"] = np.array([b"GRCh38"] * 4 + [b"GRCh38-2020-A"] * 4)
    assert set(read(path).mod) == {"rna", "atac"}


def test_rna_and_atac_on_different_assemblies_are_refused(tmp_path):
    _, mdata = _tenx(tmp_path)
    mdata["rna"].var["genome"], mdata["atac"].var["genome"] = "GRCh38", "mm10"
    mdata.write_h5mu(tmp_path / "mixed.h5mu")
    _refused(lambda: read(tmp_path / "mixed.h5mu"), "one genome", "mm10")


# --------------------------------------------------------------------------------------------- Matrix Market
def _mtx(tmp_path, banner="%%MatrixMarket matrix coordinate integer general", size=None, extra="") -> Path:
    folder = tmp_path / "mtx"
    folder.mkdir(exist_ok=True)
    X = _counts(10, 5).T.tocoo()
    entries = "".join(f"{i + 1} {j + 1} {int(v)}\n" for i, j, v in zip(X.row, X.col, X.data, strict=True))
    size = size or f"{X.shape[0]} {X.shape[1]} {X.nnz}"
    (folder / "matrix.mtx.gz").write_bytes(
        gzip.compress(f"{banner}\n%comment\n{size}\n{entries}{extra}".encode())
    )
    feats = "".join(f"ENSG{i}\tG{i}\tGene Expression\n" for i in range(5))
    (folder / "features.tsv.gz").write_bytes(gzip.compress(feats.encode()))
    (folder / "barcodes.tsv.gz").write_bytes(gzip.compress("".join(f"BC{i}-1\n" for i in range(10)).encode()))
    return folder


def test_a_well_formed_matrix_market_folder_reads(tmp_path):
    X = read(_mtx(tmp_path))["rna"].X
    assert X.shape == (10, 5) and (X != _counts(10, 5)).nnz == 0


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"banner": "%%MatrixMarket matrix coordinate pattern general"}, ["pattern", "not counts"]),
        ({"banner": "%%MatrixMarket matrix coordinate integer symmetric"}, ["banner"]),
        ({"banner": "%%MatrixMarket matrix coordinate complex general"}, ["complex"]),
        ({"banner": "%%MatrixMarket matrix array integer general"}, ["banner"]),
        ({"banner": "not a banner"}, ["banner"]),
        ({"size": "6 10 12"}, ["declares 6 features x 10 barcodes", "do not belong together"]),
        ({"size": "5 10 1000000000000"}, ["declares 1,000,000,000,000 entries"]),
        ({"size": "5 x 10"}, ["no valid size line"]),
    ],
    ids=["pattern", "symmetric", "complex", "array", "no-banner", "wrong-dims", "huge-nnz", "bad-size-line"],
)
def test_a_broken_matrix_market_header_is_refused(tmp_path, kw, words):
    folder = _mtx(tmp_path, **kw)
    _refused(lambda: read(folder), *words)


def test_a_matrix_market_entry_out_of_range_is_refused(tmp_path):
    X = _counts(10, 5)
    folder = _mtx(tmp_path, size=f"5 10 {X.nnz + 1}", extra="6 1 3\n")
    _refused(lambda: read(folder), "Could not read")


# --------------------------------------------------------------------------------------------- fragments
LINES = [("chr1", 100, 300, "A"), ("chr1", 150, 420, "B"), ("chr2", 500, 700, "A"), ("chr1", 1000, 1300, "B")]
PEAKS = (np.array(["chr1", "chr1", "chr2"]), np.array([0, 400, 450]), np.array([350, 1200, 800]))


def _frag_text(lines=LINES, sep="\n") -> str:
    return sep.join("\t".join(map(str, ln)) + "\t1" for ln in lines) + sep


def _frag(tmp_path, data: bytes, name="fragments.tsv.gz") -> Path:
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def _frag_counts(path) -> pd.DataFrame:
    a = count_fragments(path, *PEAKS)
    return pd.DataFrame(a.X.toarray(), index=a.obs_names).sort_index()


@pytest.mark.parametrize(
    "variant",
    ["plain-named-gz", "plain-tsv", "gzip", "crlf", "unsorted", "ensembl-chroms", "bom", "comments"],
)
def test_fragments_variants_count_the_same(tmp_path, variant):
    ref = _frag_counts(_frag(tmp_path, bgzf(_frag_text().encode())[0], "ref_fragments.tsv.gz"))
    assert ref.to_numpy().sum() > 0
    lines = (
        LINES[::-1]
        if variant == "unsorted"
        else [(c[3:], *r) for c, *r in LINES]
        if variant == "ensembl-chroms"
        else LINES
    )
    text = _frag_text(lines, "\r\n" if variant == "crlf" else "\n")
    text = "\ufeff" + text if variant == "bom" else "# header\n" + text if variant == "comments" else text
    data = {"plain-named-gz": text.encode(), "plain-tsv": text.encode(), "gzip": gzip.compress(text.encode())}
    path = _frag(
        tmp_path, data.get(variant, bgzf(text.encode())[0]), "f.tsv" if variant == "plain-tsv" else "f.tsv.gz"
    )
    pd.testing.assert_frame_equal(_frag_counts(path), ref)


def test_a_bgzf_fragments_file_cut_short_is_refused(tmp_path):
    data, offsets = bgzf((_frag_text() * 400).encode(), block=2048)
    assert len(offsets) > 3 and data.endswith(BGZF_EOF)
    at_block = _frag(
        tmp_path, data[: offsets[2]]
    )  # would read without error: only the missing EOF block tells
    _refused(lambda: count_fragments(at_block, *PEAKS), "cut short", "end-of-file block")
    inside = _frag(tmp_path, data[: offsets[2] + 100], "g.tsv.gz")
    _refused(lambda: count_fragments(inside, *PEAKS), "cut short")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (("chr1", -5, 300, "A"), ["negative start"]),
        (("chr1", 2**41, 2**41 + 10, "A"), ["beyond any chromosome"]),
        (("chr1", 300, 100, "A"), ["end < start"]),
    ],
    ids=["negative-start", "huge-position", "end-before-start"],
)
def test_malformed_fragment_lines_are_refused(tmp_path, line, words):
    path = _frag(tmp_path, bgzf(_frag_text([*LINES, line]).encode())[0])
    _refused(lambda: count_fragments(path, *PEAKS), "malformed lines", *words)


def test_an_empty_or_damaged_fragments_file_is_refused(tmp_path):
    _refused(lambda: count_fragments(_frag(tmp_path, bgzf(b"# only a comment\n")[0]), *PEAKS), "no fragments")
    raw = bytearray(gzip.compress((_frag_text() * 50).encode()))
    raw[30] ^= 0xFF
    _refused(lambda: count_fragments(_frag(tmp_path, bytes(raw), "d.tsv.gz"), *PEAKS))


# --------------------------------------------------------------------------------------------- peak names
STYLES = ["chr{c}:{s}-{e}", "chr{c}-{s}-{e}", "chr{c}_{s}_{e}", "chr{c}:{s}:{e}", " chr{c}:{s}-{e} ",
          "chr{c} : {s} - {e}", "chr{c} {s} {e}", "CHR{c}:{s}-{e}", "{c}:{s}-{e}", "Chr{c}_{s}_{e}"]  # fmt: skip


@pytest.mark.parametrize("style", STYLES)
def test_peak_names_in_every_style_parse_to_the_same_coordinates(tmp_path, style):
    starts = RNG.integers(0, 10**8, 12)
    ref = (np.array([f"chr{c}" for c in ["1", "2", "X"] * 4]), starts, starts + RNG.integers(1, 5000, 12))
    names = [
        style.format(c=c[3:].lower() if "CHR" not in style else c[3:], s=s, e=e)
        for c, s, e in zip(*ref, strict=True)
    ]
    for got, want in zip(parse_intervals(names), ref, strict=True):
        np.testing.assert_array_equal(got, want)
    path, _ = _h5ad(tmp_path, atac=True)
    a = ad.read_h5ad(path)
    a.var_names = names + [f"chr9:{i}-{i + 1}" for i in range(a.n_vars - len(names))]
    a.write_h5ad(path)
    got = read(path)  # inferred as ATAC from the names
    assert list(got.mod) == ["atac"]
    np.testing.assert_array_equal(var_intervals(got["atac"])[1][:12], ref[1])


def test_negative_starts_in_var_columns_are_refused():
    a = ad.AnnData(
        np.ones((2, 2), np.float32),
        var=pd.DataFrame({"chrom": ["chr1"] * 2, "start": [-5, 10], "end": [50, 90]}, index=["p1", "p2"]),
    )
    _refused(lambda: var_intervals(a), "lack valid")


# --------------------------------------------------------------------------------------------- the harness itself
@pytest.mark.parametrize(
    ("how", "word"), [("crash", "crash"), ("hang", "hang"), ("memory", "memory"), ("oops", "KeyError")]
)
def test_the_isolated_runner_counts_crashes_hangs_and_blowups_as_failures(tmp_path, monkeypatch, how, word):
    def family(rng, base, dst):
        if how == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if how == "hang":
            time.sleep(60)
        if how == "memory":
            np.ones(2**40, dtype=np.uint8)
        raise KeyError("boom")

    monkeypatch.setitem(fuzz_runner.FAMILIES, "test", {"f": (1, family)})
    bases = {"b": Base("b", tmp_path / "x", "test")}
    res = run_isolated(Case(0, 0, "b", "f", "read"), bases, tmp_path, timeout=1.5)
    assert res["outcome"] == "failure" and word in res["detail"], res


# --------------------------------------------------------------------------------------------- real files
_BASES: dict = {}


@pytest.fixture
def bases(formats_dir, snare_h5mu, tmp_path_factory):
    if "bases" not in _BASES:
        _BASES["bases"] = build_bases(
            tmp_path_factory.mktemp("fuzz"), formats_dir, snare_h5mu, n_cells=120, n_frag=3000
        )
    return _BASES["bases"]


@pytest.mark.realdata
def test_the_seed_files_read_the_same_cells_in_every_format(bases):
    """The PBMC subset as .h5ad, Cell Ranger .h5, Matrix Market folder and archive: one set of counts."""
    for m, h5ad_name in (("rna", "pbmc_rna_h5ad"), ("atac", "pbmc_atac_h5ad")):
        want = bases[h5ad_name].ref[m]
        for other in ("pbmc_10x", "pbmc_mtx", "pbmc_mtx_tar"):
            got = bases[other].ref[m]
            assert np.array_equal(got.obs, want.obs) and np.array_equal(got.var, want.var), other
            assert (got.X != want.X).nnz == 0, other
            if m == "atac":
                assert all(np.array_equal(g, w) for g, w in zip(got.coords, want.coords, strict=True)), other
    assert bases["pbmc_fragments"].ref["atac"].X.sum() > 0


FAMILY_NAMES = sorted({f for fams in fuzz_runner.FAMILIES.values() for f in fams})
CASES_PER_FAMILY = 2


@pytest.mark.realdata
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_fuzz_subset_reads_correctly_or_refuses_clearly(bases, tmp_path, family):
    results = []
    for i in range(CASES_PER_FAMILY):
        case = make_case(bases, 19, i, {family})
        results.append(run_isolated(case, bases, tmp_path, timeout=120))
    failures = [f"{r['case']}: {r['mutation']}: {r['detail']}" for r in results if r["outcome"] == "failure"]
    assert not failures, "\n".join(failures)
    assert {r["outcome"] for r in results} <= {"read", "refused"}


def test_chunked_reading_refuses_indices_out_of_range_before_using_them(tmp_path):
    from scclip.io import read_backed

    path, a = _h5ad(tmp_path)
    with read_backed(path, modality="rna") as data:
        assert sum(c.nnz for _, _, c in data["rna"].chunks(7)) == a.X.nnz
    with h5py.File(path, "r+") as f:
        f["X/indices"][0] = 50
    with read_backed(path, modality="rna") as data:
        _refused(lambda: list(data["rna"].chunks(7)), "cells 0 to 7", "damaged")
