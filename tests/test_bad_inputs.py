"""Every bad input of issue 8 ends in a clear, specific message, through all three doors:

* the library (``scclip.io.read`` / ``scclip.embed`` / ``scclip.fragments.count_fragments``): a ``ScclipError``;
* the CLI (``scclip embed``): exit status 1 and one line on stderr, no traceback;
* the app's data loader (``scclip.explore.read_uploads`` + ``validation_summary``), and for a few cases the
  Data page itself through ``AppTest``: an ``st.error`` box.

Tiny files are written to ``tmp_path``; the mouse model is ``pretrained/demo-synthetic`` (mm10), the human
one a tiny model trained here in seconds. The table in ``docs/reliability.md`` lists the messages.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp

import scclip
from scclip import explore
from scclip.cli import main
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError
from scclip.io import read, read_pair, write_h5mu

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pretrained" / "demo-synthetic"
N = 40


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad_models")
    scclip.train(
        synthetic_multiome(200, seed=0, genome="hg38"),
        out_dir=root / "hg38",
        model_config=scclip.get_preset("tiny"),
        train_config=scclip.TrainConfig(epochs=1),
    )
    return {
        "mm10": scclip.load_pretrained(DEMO),
        "mm10_dir": DEMO,
        "hg38": scclip.load_pretrained(root / "hg38"),
        "hg38_dir": root / "hg38" / "model",
    }


def _mouse() -> md.MuData:
    return synthetic_multiome(N, n_genes=80, peaks_per_gene=2, seed=0)


def _rna(**kw) -> ad.AnnData:
    a = _mouse()["rna"].copy()
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def _write(adata: ad.AnnData, path: Path) -> Path:
    adata.write_h5ad(path)
    return path


def _dense_rna(fill) -> ad.AnnData:
    a = _rna()
    X = a.X.toarray()
    fill(X)
    a.X = sp.csr_matrix(X)
    return a


# ------------------------------------------------------------------------------------------------ files
def f_not_hdf5(d: Path) -> dict:
    (d / "cells.h5ad").write_text("barcode,Gene1\nAAAC,3\n")
    return {"data": d / "cells.h5ad"}


def f_truncated(d: Path) -> dict:
    full = _write(_rna(), d / "full.h5ad").read_bytes()
    (d / "cells.h5ad").write_bytes(full[: len(full) // 2])
    return {"data": d / "cells.h5ad"}


def f_no_x(d: Path) -> dict:
    return {"data": _write(_rna(X=None), d / "cells.h5ad")}


def f_zero_cells(d: Path) -> dict:
    return {"data": _write(_rna()[:0].copy(), d / "cells.h5ad")}


def f_zero_features(d: Path) -> dict:
    return {"data": _write(_rna()[:, :0].copy(), d / "cells.h5ad")}


def f_negative(d: Path) -> dict:
    return {"data": _write(_dense_rna(lambda X: X.__setitem__((0, 0), -2)), d / "cells.h5ad")}


def f_nan(d: Path) -> dict:
    return {"data": _write(_dense_rna(lambda X: X.__setitem__((1, 1), np.nan)), d / "cells.h5ad")}


def f_inf(d: Path) -> dict:
    return {"data": _write(_dense_rna(lambda X: X.__setitem__((2, 3), np.inf)), d / "cells.h5ad")}


def f_scaled(d: Path) -> dict:
    import scanpy as sc

    a = _rna()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    sc.pp.scale(a)  # z-scored, no .raw kept: cannot be turned back into expression
    return {"data": _write(a, d / "cells.h5ad")}


def f_peaks_no_coords(d: Path) -> dict:
    a = _mouse()["atac"].copy()
    a.var = a.var.iloc[:, :0].copy()
    a.var_names = [f"peak_{i}" for i in range(a.n_vars)]
    a.var["feature_types"] = "Peaks"
    return {"atac": _write(a, d / "atac.h5ad")}


def f_genes_unknown(d: Path) -> dict:
    a = _rna()
    a.var = a.var.iloc[:, :0].copy()
    a.var_names = [f"Xyz{i}" for i in range(a.n_vars)]
    return {"data": _write(a, d / "cells.h5ad")}


def f_duplicate_features(d: Path) -> dict:
    a = _mouse()["atac"].copy()
    names = a.var_names.tolist()
    names[1] = names[0]
    a.var_names = names
    return {"atac": _write(a, d / "atac.h5ad")}


def f_duplicate_barcodes(d: Path) -> dict:
    a = _rna()
    names = a.obs_names.tolist()
    names[1] = names[0]
    a.obs_names = names
    return {"data": _write(a, d / "cells.h5ad")}


def f_not_paired(d: Path) -> dict:
    m = _mouse()
    atac = m["atac"].copy()
    atac.obs_names = [f"other-{i}" for i in range(atac.n_obs)]
    return {"rna": _write(m["rna"].copy(), d / "rna.h5ad"), "atac": _write(atac, d / "atac.h5ad")}


def f_human(d: Path) -> dict:
    return {
        "data": write_h5mu(
            synthetic_multiome(N, n_genes=80, peaks_per_gene=2, seed=0, genome="hg38"), d / "cells.h5mu"
        )
    }


def f_mouse(d: Path) -> dict:
    return {"data": write_h5mu(_mouse(), d / "cells.h5mu")}


def f_atac_as_rna(d: Path) -> dict:
    return {"rna": _write(_mouse()["atac"].copy(), d / "atac.h5ad")}


def f_fragments(d: Path) -> dict:
    rna = _write(_rna(), d / "rna.h5ad")
    bc = _rna().obs_names
    lines = [f"chr1\t{3_000_000 + 100 * i}\t{3_000_200 + 100 * i}\t{bc[i % N]}\t1" for i in range(50)]
    lines.insert(10, "chr1\tnot-a-number\t3000500\tAAAC-1\t1")
    with gzip.open(d / "fragments.tsv.gz", "wt") as fh:
        fh.write("# a 10x fragments file\n" + "\n".join(lines) + "\n")
    return {"rna": rna, "fragments": d / "fragments.tsv.gz"}


# ------------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    id: str
    files: object
    expected: str  # regex in the message
    lib: str = "read"  # read | embed | pair | fragments
    model: str = "mm10"
    paired: bool | None = None


CASES = [
    Case("not-hdf5", f_not_hdf5, r"is not a valid HDF5 file \(corrupt or incomplete download\?\)"),
    Case("truncated-h5ad", f_truncated, r"the file may be corrupt"),
    Case("no-X", f_no_x, r"has no matrix X\. Store the raw counts in X"),
    Case("zero-cells", f_zero_cells, r"is empty \(0 cells x \d+ features\)"),
    Case("zero-features", f_zero_features, r"is empty \(\d+ cells x 0 features\)"),
    Case("negative-counts", f_negative, r"negative values .*counts cannot be negative"),
    Case("nan", f_nan, r"NaN or infinite values"),
    Case("inf", f_inf, r"NaN or infinite values"),
    Case("scaled-rna", f_scaled, r"looks scaled \(z-scored.*adata\.raw"),
    Case("peaks-without-coordinates", f_peaks_no_coords, r"names are not genomic intervals", lib="embed"),
    Case("genes-unknown-to-model", f_genes_unknown, r"no query feature maps onto the model's", lib="embed"),
    Case("duplicate-feature-names", f_duplicate_features, r"feature names in .* are not unique"),
    Case("duplicate-barcodes", f_duplicate_barcodes, r"cell barcodes in .* are not unique"),
    Case("paired-without-shared-barcodes", f_not_paired, r"No barcode is shared", lib="pair", paired=True),
    Case("human-data-mouse-model", f_human, r"genome mismatch", lib="embed", model="mm10"),
    Case("mouse-data-human-model", f_mouse, r"genome mismatch", lib="embed", model="hg38"),
    Case("atac-file-given-as-rna", f_atac_as_rna, r"was given as RNA but .*were the two files swapped"),
    Case("fragments-malformed-lines", f_fragments, r"malformed lines", lib="fragments"),
]
IDS = [c.id for c in CASES]


def _lib(case: Case, f: dict, models: dict):
    model = models[case.model]
    if case.lib == "read":
        if "rna" in f:
            return read(f["rna"], modality="rna")
        if "atac" in f:
            return read(f["atac"], modality="atac")
        return read(f["data"])
    if case.lib == "pair":
        return read_pair(f["rna"], f["atac"], paired=True)
    if case.lib == "fragments":
        from scclip.fragments import count_fragments

        feats = model.feature_space["atac"]
        return count_fragments(f["fragments"], feats.chrom, feats.start, feats.end)
    mdata = read(f["atac"], modality="atac") if "atac" in f else read(f["data"])
    return scclip.embed(model, mdata, device="cpu")


def _cli_argv(case: Case, f: dict, models: dict, out: Path) -> list[str]:
    argv = ["embed", "--model", str(models[f"{case.model}_dir"]), "--device", "cpu", "--out", str(out)]
    if case.lib == "fragments":
        return [*argv, "--rna", str(f["rna"]), "--fragments", str(f["fragments"])]
    if "data" in f:
        return [*argv, "--data", str(f["data"])]
    for m in ("rna", "atac"):
        if m in f:
            argv += [f"--{m}", str(f[m])]
    return [*argv, "--paired"] if case.paired else argv


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _app_messages(f: dict, models: dict, case: Case) -> str:
    """What the Data page shows: the loader's ScclipError, or the validation summary's errors."""
    uploads = [(p.name, p.read_bytes()) for p in f.values()]
    try:
        mdata, _ = explore.read_uploads(uploads, model=models[case.model], paired=case.paired)
    except ScclipError as err:
        return str(err)
    return "\n".join(explore.validation_summary(mdata, models[case.model])["errors"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_library_raises_a_clear_error(case, models, tmp_path):
    f = case.files(tmp_path)
    with pytest.raises(ScclipError, match=case.expected):
        _lib(case, f, models)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_exits_1_with_one_line(case, models, tmp_path):
    f = case.files(tmp_path)
    out = tmp_path / "out" / "embedded.h5mu"
    argv = _cli_argv(case, f, models, out)
    rc, stdout, stderr = cli(*argv)
    assert rc == 1, stderr
    assert "Traceback" not in stderr and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scclip embed: error: ")
    import re

    assert re.search(case.expected, lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_app_loader_shows_the_error(case, models, tmp_path):
    f = case.files(tmp_path)
    import re

    if case.id == "atac-file-given-as-rna":
        # The app has no "this is RNA" field: it recognises the modality from the features, so an ATAC file
        # can never be taken for RNA there.
        mdata, _ = explore.read_uploads([(p.name, p.read_bytes()) for p in f.values()])
        assert list(mdata.mod) == ["atac"]
        return
    msg = _app_messages(f, models, case)
    assert re.search(case.expected, msg), msg


def test_upload_larger_than_the_limit_points_to_the_server_path(tmp_path, monkeypatch):
    f = f_mouse(tmp_path)
    blob = f["data"].read_bytes()
    with pytest.raises(ScclipError, match=r"above this server's limit of .*'Server path' tab"):
        explore.read_uploads([("cells.h5mu", blob)], max_bytes=len(blob) - 1)
    monkeypatch.setenv("SCCLIP_MAX_UPLOAD_MB", "0.001")
    assert explore.max_upload_bytes() == 1048
    with pytest.raises(ScclipError, match="Server path"):
        explore.read_uploads([("cells.h5mu", blob)])


# ------------------------------------------------------------------------------- detected, warned, handled
def _lognorm() -> ad.AnnData:
    import scanpy as sc

    a = _rna()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


def test_log_normalised_rna_is_detected_warned_and_used_as_is(models, tmp_path, caplog):
    path = _write(_lognorm(), tmp_path / "lognorm.h5ad")
    emb = scclip.embed(models["mm10"], read(path), device="cpu")
    prep = emb.uns["scclip"]["modalities"]["rna"]["preprocessing"]
    assert prep["normalized"] is False and "log-scale" in prep["reason"]
    assert any("already normalised" in w for w in emb.uns["scclip"]["warnings"])
    rc, _, err = cli(
        "embed", "--model", DEMO, "--data", path, "--out", tmp_path / "e.h5mu", "--device", "cpu"
    )
    assert rc == 0 and "scclip embed: warning: rna: RNA input looks already normalised" in err
    mdata, _ = explore.read_uploads([(path.name, path.read_bytes())], model=models["mm10"])
    summary = explore.validation_summary(mdata, models["mm10"])
    assert not summary["errors"] and any("look already normalised" in w for w in summary["warnings"])


def test_scaled_rna_with_raw_uses_the_raw_values(models, tmp_path):
    import scanpy as sc

    a = _lognorm()
    a.raw = a.copy()
    sc.pp.scale(a)
    path = _write(a, tmp_path / "scaled.h5ad")
    mdata = read(path)
    assert any("used .raw" in n for n in mdata.uns["scclip_read"]["notes"])
    assert mdata["rna"].X.min() >= 0
    emb = scclip.embed(models["mm10"], mdata, device="cpu")
    assert emb["rna"].obsm["X_scclip"].shape[0] == N


def test_rna_duplicate_symbols_with_gene_ids_are_kept(tmp_path):
    a = _rna()
    names = a.var_names.tolist()
    names[1] = names[0]
    a.var_names = names
    a.var["gene_ids"] = [f"ENSMUSG{i:011d}" for i in range(a.n_vars)]
    mdata = read(_write(a, tmp_path / "rna.h5ad"))
    assert mdata["rna"].var_names.is_unique
    assert any("match by gene id" in n for n in mdata.uns["scclip_read"]["notes"])


def test_no_x_but_counts_layer_is_read(tmp_path):
    a = _rna()
    a.layers["counts"] = a.X.copy()
    a.X = None
    mdata = read(_write(a, tmp_path / "rna.h5ad"))
    assert mdata["rna"].X.nnz > 0 and any("layers['counts']" in n for n in mdata.uns["scclip_read"]["notes"])


def test_in_memory_anndata_is_checked_by_embed(models):
    a = _dense_rna(lambda X: X.__setitem__((0, 0), np.nan))
    with pytest.raises(ScclipError, match="NaN or infinite"):
        scclip.embed(models["mm10"], md.MuData({"rna": a}), device="cpu")
    with pytest.raises(ScclipError, match="empty"):
        scclip.embed(models["mm10"], md.MuData({"rna": _rna()[:0].copy()}), device="cpu")


# ------------------------------------------------------------------------------- through the Data page
AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


@pytest.fixture
def app_env(demo_app_env):
    return demo_app_env


def _data_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    at.switch_page("webapp/pages/data.py").run()
    return at


@pytest.mark.parametrize(
    ("files", "expected", "limit_mb"),
    [
        (f_not_hdf5, "is not a valid HDF5 file", None),
        (f_negative, "counts cannot be negative", None),
        (f_duplicate_barcodes, "cell barcodes in", None),
        (f_mouse, "'Server path' tab", "0.001"),
    ],
    ids=["not-hdf5", "negative-counts", "duplicate-barcodes", "upload-too-large"],
)
def test_data_page_shows_an_error_box(app_env, monkeypatch, files, expected, limit_mb):
    if limit_mb:
        monkeypatch.setenv("SCCLIP_MAX_UPLOAD_MB", limit_mb)
    f = files(app_env)
    at = _data_page()
    at.file_uploader(key="upload_files").set_value(
        [(p.name, p.read_bytes(), "application/octet-stream") for p in f.values()]
    )
    at.run()
    at.button(key="upload_load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(expected in e.value for e in at.error), [e.value for e in at.error]


def test_cli_embeds_rna_with_atac_from_a_fragments_file(models, tmp_path):
    """`scclip embed --rna R --fragments F`: ATAC counted straight onto the model's features, same cells."""
    import mudata as md

    feats = models["mm10"].feature_space["atac"]
    rna = _rna()
    bc = rna.obs_names
    lines = []
    for i in range(len(bc)):
        for j in range(3):  # three fragments per cell inside model features
            k = (7 * i + 13 * j) % feats.n_features
            s0 = int(feats.start[k]) + 10
            lines.append(f"{feats.chrom[k]}\t{s0}\t{s0 + 50}\t{bc[i]}\t1")
    frag = tmp_path / "fragments.tsv.gz"
    with gzip.open(frag, "wt") as fh:
        fh.write("\n".join(sorted(lines)) + "\n")
    rna_path = _write(rna, tmp_path / "rna.h5ad")
    out = tmp_path / "emb.h5mu"
    rc, _stdout, stderr = cli(
        "embed",
        "--model",
        models["mm10_dir"],
        "--device",
        "cpu",
        "--rna",
        rna_path,
        "--fragments",
        frag,
        "--out",
        out,
    )
    assert rc == 0, stderr
    res = md.read_h5mu(out)
    assert list(res["atac"].obs_names) == list(bc) and res.uns["scclip"]["paired"]
    assert res["atac"].obsm["X_scclip"].shape[0] == len(bc)
    rc, _, stderr = cli(
        "embed",
        "--model",
        models["mm10_dir"],
        "--atac",
        rna_path,
        "--fragments",
        frag,
        "--out",
        tmp_path / "x.h5mu",
    )
    assert rc == 1 and "not both" in stderr
