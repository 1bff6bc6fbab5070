"""Property tests (hypothesis) for coordinate parsing, chromosome ordering and interval-overlap mapping."""

from __future__ import annotations

import itertools

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from scclip.errors import ScclipError  # noqa: E402
from scclip.features import align_features, features_from_anndata  # noqa: E402
from scclip.genome import chrom_sort_key, genome_order, normalize_chrom, parse_interval  # noqa: E402

FAST = settings(max_examples=40, deadline=None)
CHROMS = [str(i) for i in range(1, 23)] + ["X", "Y", "M", "MT", "GL000194.1", "KI270711.1"]
chrom = st.sampled_from(CHROMS)
position = st.integers(min_value=0, max_value=250_000_000)


@FAST
@given(chrom, position, st.integers(0, 5_000_000), st.sampled_from([":-", "--", "__", ":_"]), st.booleans())
def test_parse_interval_round_trips_every_format(c, start, length, seps, prefix):
    end = start + length
    name = f"{'chr' if prefix else ''}{c}{seps[0]}{start}{seps[1]}{end}"
    got = parse_interval(name)
    assert got == (normalize_chrom(f"{'chr' if prefix else ''}{c}"), start, end)
    assert parse_interval(f"{got[0]}:{got[1]}-{got[2]}") == got  # the canonical form parses to itself
    assert parse_interval(f"{got[0]}:{got[1]:,}-{got[2]:,}") == got  # thousands separators


@FAST
@given(chrom, position, st.integers(1, 1000))
def test_parse_interval_refuses_end_before_start(c, start, back):
    with pytest.raises(ScclipError, match="not genomic intervals"):
        parse_interval(f"chr{c}:{start + back}-{start}")


@FAST
@given(st.lists(chrom, min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_natural_chromosome_order_is_a_total_order(chroms, rnd):
    names = sorted({normalize_chrom(c) for c in chroms})
    keys = [chrom_sort_key(c) for c in names]
    assert len(set(keys)) == len(names)  # distinct normalised names never tie: the order is total
    shuffled = names[:]
    rnd.shuffle(shuffled)
    assert sorted(shuffled, key=chrom_sort_key) == sorted(names, key=chrom_sort_key)  # input order irrelevant
    numbered = [c for c in sorted(names, key=chrom_sort_key) if c[3:].isdigit()]
    assert numbered == sorted(numbered, key=lambda c: int(c[3:]))  # chr2 before chr10
    for a in names:
        for b in names:
            assert (chrom_sort_key(a) < chrom_sort_key(b)) + (chrom_sort_key(b) < chrom_sort_key(a)) == (
                a != b
            )


@FAST
@given(st.lists(st.tuples(chrom, st.integers(0, 5)), min_size=1, max_size=40))
def test_genome_order_is_stable(rows):
    chroms = [normalize_chrom(c) for c, _ in rows]
    starts = [s for _, s in rows]
    order = genome_order(chroms, starts)
    keys = [(chrom_sort_key(chroms[i]), starts[i]) for i in order]
    assert keys == sorted(keys)
    for a, b in itertools.pairwise(order):  # equal keys keep their input order
        if (chroms[a], starts[a]) == (chroms[b], starts[b]):
            assert a < b


def _peaks(draw_chroms, gaps, widths):
    """Non-overlapping peaks (gap >= 10 bp) on a few chromosomes."""
    rows, pos = [], {}
    for c, gap, w in zip(draw_chroms, gaps, widths, strict=True):
        s = pos.get(c, 1000) + gap
        rows.append((normalize_chrom(c), s, s + w))
        pos[c] = s + w
    return rows


peak_sets = st.integers(2, 25).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from(["1", "2", "10", "X"]), min_size=n, max_size=n),
        st.lists(st.integers(10, 5000), min_size=n, max_size=n),
        st.lists(st.integers(2, 3000), min_size=n, max_size=n),
    )
)


def _atac(rows, X, fmt="{}:{}-{}") -> ad.AnnData:
    a = ad.AnnData(sp.csr_matrix(X, dtype=np.float32))
    a.var_names = [fmt.format(*r) for r in rows]
    return a


@FAST
@given(peak_sets, st.integers(0, 2**31 - 1))
def test_mapping_a_peak_set_onto_itself_is_the_identity(peaks, seed):
    rows = _peaks(*peaks)
    X = np.random.default_rng(seed).poisson(1.0, (4, len(rows)))
    model, _ = features_from_anndata(_atac(rows, X), modality="atac", n_patches=1)
    query = _atac(rows, X, fmt="{}-{}-{}")  # other names, same intervals: the overlap path, not a rename
    al = align_features(query, model)
    assert al.report["method"] != "identity"
    assert al.report["frac_query_used"] == 1.0 and al.report["frac_model_hit"] == 1.0
    mapped = al.transform(query.X).toarray()
    by_name = dict(zip(model.names, range(model.n_features), strict=True))
    cols = [by_name[f"{c}:{s}-{e}"] for c, s, e in rows]
    np.testing.assert_array_equal(mapped[:, cols], X)


@FAST
@given(peak_sets, st.integers(0, 2**31 - 1))
def test_splitting_a_peak_into_halves_conserves_counts(peaks, seed):
    rows = _peaks(*peaks)
    rng = np.random.default_rng(seed)
    model, _ = features_from_anndata(_atac(rows, np.ones((1, len(rows)))), modality="atac", n_patches=1)
    halves, parent = [], []
    for i, (c, s, e) in enumerate(rows):
        m = (s + e) // 2
        halves += [(c, s, m), (c, m, e)]
        parent += [i, i]
    Xh = rng.poisson(2.0, (5, len(halves)))
    mapped = align_features(_atac(halves, Xh), model).transform(sp.csr_matrix(Xh, dtype=np.float32)).toarray()
    expected = np.zeros((5, len(rows)))
    np.add.at(expected.T, np.asarray(parent), Xh.T)
    by_name = dict(zip(model.names, range(model.n_features), strict=True))
    cols = [by_name[f"{c}:{s}-{e}"] for c, s, e in rows]
    np.testing.assert_array_equal(mapped[:, cols], expected)
    assert mapped.sum() == Xh.sum()  # every count lands somewhere, exactly once
