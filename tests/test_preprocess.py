"""Row-wise RNA / ATAC preprocessing (scclip.preprocess) against scanpy and naive dense formulas."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from scclip import preprocess as pp
from scclip.errors import ScclipError


@pytest.fixture
def counts() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = rng.poisson(0.7, (30, 40)).astype(np.float32)
    dense[4] = 0  # an empty cell
    return sp.csr_matrix(dense)


def test_normalize_rna_matches_scanpy(counts):
    adata = ad.AnnData(counts.copy())
    with pytest.warns(UserWarning, match="zero counts"):
        sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    before = counts.toarray()
    out = pp.normalize_rna(counts)
    assert sp.isspmatrix_csr(out) and out.dtype == np.float32
    np.testing.assert_allclose(out.toarray(), adata.X.toarray(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(counts.toarray(), before)  # input untouched
    assert out[4].nnz == 0


def test_normalize_rna_is_row_wise_and_accepts_dense(counts):
    rows = [7, 2, 19]
    full = pp.normalize_rna(counts)
    np.testing.assert_allclose(pp.normalize_rna(counts[rows]).toarray(), full[rows].toarray())
    np.testing.assert_allclose(pp.normalize_rna(counts.toarray()).toarray(), full.toarray())


def test_looks_normalized(counts):
    assert not pp.looks_normalized(counts)
    assert pp.looks_normalized(pp.normalize_rna(counts))
    cpm = counts.multiply(1e6 / np.maximum(counts.sum(axis=1), 1)).tocsr()
    assert pp.looks_normalized(cpm)  # normalised, not logged: every cell sums to 1e6
    scaled = counts.copy()
    scaled.data -= 0.5
    assert pp.looks_normalized(scaled)
    ambient = counts.multiply(np.linspace(50.3, 90.7, counts.shape[0])[:, None]).tocsr()
    assert not pp.looks_normalized(ambient)  # non-integer but count scale, totals vary
    assert not pp.looks_normalized(sp.csr_matrix((3, 3), dtype=np.float32))


def test_prepare_rna_normalises_only_raw_counts(counts):
    out, info = pp.prepare_rna(counts)
    assert info["normalized"] and "integer" in info["reason"]
    np.testing.assert_allclose(out.toarray(), pp.normalize_rna(counts).toarray())
    again, info2 = pp.prepare_rna(out)
    assert not info2["normalized"] and "log" in info2["reason"]
    np.testing.assert_array_equal(again.toarray(), out.toarray())
    neg = out.copy()
    neg.data -= 6.0  # some values become negative (scaled data)
    assert "warning" in pp.prepare_rna(neg)[1]


def test_binarize():
    X = sp.csr_matrix(np.array([[0, 3, 0], [2, 0, 1]], dtype=np.float32))
    X.data[0] = 0  # an explicit zero
    out = pp.binarize(X)
    np.testing.assert_array_equal(out.toarray(), [[0, 0, 0], [1, 0, 1]])
    assert out.nnz == 2 and out.dtype == np.float32 and X.data.tolist() == [0, 2, 1]


def test_tfidf_matches_naive_formula():
    dense = np.array([[1, 0, 2, 0], [0, 0, 1, 1], [3, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float64)
    idf = pp.tfidf_fit(sp.csr_matrix(dense))
    n_cells, feature_totals = dense.shape[0], dense.sum(axis=0)
    expected_idf = np.array([n_cells / 4, 0.0, n_cells / 3, n_cells / 2])  # unseen feature -> 0
    np.testing.assert_allclose(idf, expected_idf, rtol=1e-6)
    assert feature_totals[1] == 0
    tf = dense / np.maximum(dense.sum(axis=1, keepdims=True), 1)
    expected = np.log1p(tf * expected_idf * 1e4)
    out = pp.tfidf(sp.csr_matrix(dense), idf)
    assert sp.isspmatrix_csr(out) and out.dtype == np.float32
    np.testing.assert_allclose(out.toarray(), expected, rtol=1e-5)
    np.testing.assert_allclose(pp.tfidf(sp.csr_matrix(dense[[2]]), idf).toarray(), expected[[2]], rtol=1e-5)
    with pytest.raises(ScclipError, match="idf has 3 values"):
        pp.tfidf(sp.csr_matrix(dense), idf[:3])


def test_prepare_atac(counts):
    binary, info = pp.prepare_atac(counts)
    assert info["method"] == "binary" and set(binary.data) == {1.0}
    fitted, info = pp.prepare_atac(counts, method="tfidf")
    assert "note" in info and info["idf"].shape == (counts.shape[1],)
    given, info = pp.prepare_atac(counts[:5], method="tfidf", idf=info["idf"])
    assert "note" not in info
    np.testing.assert_allclose(given.toarray(), fitted[:5].toarray())
    with pytest.raises(ScclipError, match="Unknown ATAC preprocessing"):
        pp.prepare_atac(counts, method="lsi")


@pytest.mark.realdata
def test_real_snareseq_counts_are_raw_and_batches_agree(snare_h5mu):
    from scclip.io import read

    mdata = read(snare_h5mu)
    rna, atac = mdata["rna"].X, mdata["atac"].X
    assert not pp.looks_normalized(rna) and not pp.looks_normalized(atac)
    out, info = pp.prepare_rna(rna)
    assert info["normalized"] and out.nnz == rna.nnz
    batch = np.arange(1000, 1500)
    np.testing.assert_allclose(pp.prepare_rna(rna[batch])[0].toarray(), out[batch].toarray(), rtol=1e-6)
    binary, _ = pp.prepare_atac(atac)
    assert binary.nnz == atac.nnz and binary.max() == 1.0
