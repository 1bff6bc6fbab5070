"""Top-k partners, match tables, one-to-one assignment and label transfer."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from scclip import match
from scclip.errors import ScclipError


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(40, 6))
    return r, r + rng.normal(size=r.shape) * 0.8


@pytest.mark.parametrize("chunk", [None, 3])
def test_topk_partners_matches_argsort(pair, chunk):
    r, a = pair
    s = _unit(r) @ _unit(a).T
    idx, sim = match.topk_partners(r, a, k=5, chunk_size=chunk)
    assert idx.shape == sim.shape == (40, 5)
    assert idx.dtype == np.int64 and sim.dtype == np.float32
    np.testing.assert_array_equal(idx, np.argsort(-s, axis=1)[:, :5])
    np.testing.assert_allclose(sim, np.take_along_axis(s, idx, 1), rtol=1e-5)
    assert (np.diff(sim, axis=1) <= 0).all()


def test_topk_partners_caps_k_and_checks_input(pair):
    r, a = pair
    idx, _ = match.topk_partners(r, a[:3], k=10)
    assert idx.shape == (40, 3)
    with pytest.raises(ScclipError, match="k must be"):
        match.topk_partners(r, a, k=0)
    with pytest.raises(ScclipError, match="dimensions"):
        match.topk_partners(r, a[:, :2])


def test_match_table_paired(pair):
    r, a = pair
    names_r = [f"r{i}" for i in range(40)]
    names_a = [f"a{i}" for i in range(40)]
    df = match.match_table(r, a, rna_names=names_r, atac_names=names_a, k=3, paired=True)
    assert list(df.columns) == ["cell", "modality", "partner", "rank", "similarity", "true_partner_rank"]
    assert len(df) == 2 * 40 * 3
    assert df.groupby(["modality", "cell"], observed=True)["rank"].apply(lambda v: list(v) == [1, 2, 3]).all()
    s = _unit(r) @ _unit(a).T
    rna_rows = df[df.modality == "rna"].drop_duplicates("cell")
    want = 1 + (s > np.diag(s)[:, None]).sum(1)
    np.testing.assert_array_equal(rna_rows.true_partner_rank.to_numpy(), want)
    atac_rows = df[df.modality == "atac"].drop_duplicates("cell")
    np.testing.assert_array_equal(
        atac_rows.true_partner_rank.to_numpy(), 1 + (s.T > np.diag(s)[:, None]).sum(1)
    )
    first = df[(df.modality == "rna") & (df["rank"] == 1)]
    # a partner found at rank 1 is the true partner exactly when true_partner_rank is 1
    assert ((first.partner.str[1:] == first.cell.str[1:]) == (first.true_partner_rank == 1)).all()
    assert df[df.modality == "atac"].partner.str.startswith("r").all()


def test_match_table_unpaired_and_bad_names(pair):
    r, a = pair
    df = match.match_table(r, a[:25], k=2, paired=False)
    assert "true_partner_rank" not in df.columns
    assert len(df) == 40 * 2 + 25 * 2
    with pytest.raises(ScclipError, match="one name per cell"):
        match.match_table(r, a, rna_names=["x"], k=2, paired=True)
    with pytest.raises(ScclipError, match="same cell"):
        match.match_table(r, a[:25], k=2, paired=True)


def test_hungarian_is_optimal_on_tiny_problem():
    rng = np.random.default_rng(1)
    r, a = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    s = _unit(r) @ _unit(a).T
    best = max(sum(s[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    df = match.one_to_one(r, a, method="hungarian")
    assert df.similarity.sum() == pytest.approx(best, rel=1e-5)
    assert df.attrs["method"] == "hungarian"


@pytest.mark.parametrize("method", ["greedy", "sinkhorn"])
def test_scalable_methods_give_valid_near_optimal_pairings(method):
    rng = np.random.default_rng(2)
    r = rng.normal(size=(2600, 16))  # > 2,000 so that the greedy rounds (not only the exact finish) run
    a = r + rng.normal(size=r.shape) * 0.5
    exact = match.one_to_one(r, a, method="hungarian")
    df = match.one_to_one(r, a, method=method, rna_names=[f"c{i}" for i in range(2600)], sinkhorn_iter=5)
    assert df.attrs["method"] == method
    assert sorted(df.rna_index) == list(range(2600)) and sorted(df.atac_index) == list(range(2600))
    assert df.similarity.sum() <= exact.similarity.sum() + 1e-3
    assert df.similarity.sum() > 0.99 * exact.similarity.sum()
    assert (df.rna_index == df.atac_index).mean() > 0.95
    assert df.rna.iloc[0] == "c0"


def test_one_to_one_rectangular_and_auto(pair):
    r, a = pair
    df = match.one_to_one(r, a[:15])
    assert df.attrs["method"] == "hungarian" and len(df) == 15
    assert df.atac_index.is_unique and df.rna_index.is_unique
    g = match.one_to_one(r[:15], a, method="greedy")
    assert len(g) == 15 and g.atac_index.is_unique
    with pytest.raises(ScclipError, match="method"):
        match.one_to_one(r, a, method="magic")


def test_transfer_labels_votes_and_confidence():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]])
    lab = pd.Series(["T", "T", "B", "B", "B"])
    q = np.array([[1.0, 0.05], [0.05, 1.0]])
    labels, conf = match.transfer_labels(ref, lab, q, k=3)
    assert list(labels) == ["T", "B"]
    np.testing.assert_allclose(conf, [2 / 3, 1.0])
    labels, conf = match.transfer_labels(ref, lab, q[:1], k=2)  # T, T
    assert list(labels) == ["T"] and conf[0] == 1.0
    lab2 = pd.Series(["T", "B", None, None, None])
    labels, conf = match.transfer_labels(ref, lab2, q[:1], k=2)  # 1-1 tie -> nearest (T); missing ignored
    assert list(labels) == ["T"] and conf[0] == 0.5


def test_match_paired_agrees_with_separate_calls(pair):
    from scclip.metrics import foscttm

    r, a = pair
    res = match.match_paired(r, a, k=4, chunk_size=6)
    for name, (q, ref) in {"rna_to_atac": (r, a), "atac_to_rna": (a, r)}.items():
        idx, sim = match.topk_partners(q, ref, k=4)
        np.testing.assert_array_equal(res[name]["indices"], idx)
        np.testing.assert_allclose(res[name]["similarities"], sim, rtol=1e-5)
        hit = (idx[:, 0] == np.arange(len(q))).mean()
        assert (res[name]["true_partner_rank"] == 1).mean() == pytest.approx(hit)
    assert res["foscttm"] == pytest.approx(foscttm(r, a))


# --------------------------------------------------------------------------- matching-time Sinkhorn
def _hub_pair(n: int = 300, d: int = 16, seed: int = 0):
    """Paired noisy embeddings where a few ATAC cells sit near everyone (hubs), as in real embeddings."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    rna, atac = z + 0.9 * rng.normal(size=z.shape), z + 0.9 * rng.normal(size=z.shape)
    atac[:8] = z.mean(0) * 20 + 0.05 * rng.normal(size=(8, d))
    return rna, atac


def test_sinkhorn_bias_makes_the_plan_doubly_stochastic():
    rna, atac = _hub_pair()
    eps = 0.05
    rb, ab = match.sinkhorn_bias(rna, atac, eps=eps, n_iter=500, tol=1e-8, chunk_size=64)
    q = rna / np.linalg.norm(rna, axis=1, keepdims=True)
    r = atac / np.linalg.norm(atac, axis=1, keepdims=True)
    plan = np.exp((q @ r.T + rb[:, None] + ab[None, :]) / eps)
    np.testing.assert_allclose(plan.sum(1), 1 / len(q), rtol=1e-4)
    np.testing.assert_allclose(plan.sum(0), 1 / len(r), rtol=1e-4)
    with pytest.raises(ScclipError, match="eps must be > 0"):
        match.sinkhorn_bias(rna, atac, eps=0)


def test_candidate_bias_ranks_like_the_dense_biased_scores():
    from scclip.metrics import paired_metrics

    rna, atac = _hub_pair(n=120, seed=1)
    rng = np.random.default_rng(2)
    rb, ab = rng.normal(scale=0.1, size=len(rna)), rng.normal(scale=0.1, size=len(atac))
    q = rna / np.linalg.norm(rna, axis=1, keepdims=True)
    r = atac / np.linalg.norm(atac, axis=1, keepdims=True)
    s = q @ r.T
    r2a, a2r = s + ab[None, :], (s + rb[:, None]).T  # rows: the query cell; columns: its candidates
    expected = {
        name: float(np.mean((m > np.diag(m)[:, None]).sum(1) / (len(m) - 1))) for name, m in
        (("rna_to_atac", r2a), ("atac_to_rna", a2r))
    }  # fmt: skip
    got = paired_metrics(rna, atac, ks=(1,), temperatures=(), candidate_bias=(rb, ab), chunk_size=32)
    for direction, value in expected.items():
        assert got["foscttm"][direction] == pytest.approx(value, abs=1e-6)
    # zero bias is the plain cosine; a constant bias changes no ranking
    plain = paired_metrics(rna, atac, ks=(1, 5), temperatures=())
    for bias in ((np.zeros(120), np.zeros(120)), (np.full(120, 3.0), np.full(120, -2.0))):
        shifted = paired_metrics(rna, atac, ks=(1, 5), temperatures=(), candidate_bias=bias)
        assert shifted["foscttm"]["mean"] == pytest.approx(plain["foscttm"]["mean"], abs=1e-6)
        assert shifted["top5"]["mean"] == pytest.approx(plain["top5"]["mean"], abs=1e-6)
    with pytest.raises(ScclipError, match="one per cell"):
        paired_metrics(rna, atac, candidate_bias=(rb[:5], ab))


def test_sinkhorn_matching_damps_hubs():
    from scclip.evaluate import evaluate_embeddings

    rna, atac = _hub_pair()
    res = evaluate_embeddings(rna, atac, sinkhorn=True)
    assert res["foscttm_sinkhorn"] < res["foscttm"]  # hubs no longer rank above everyone's partner
    assert res["directions"]["foscttm_sinkhorn"]["rna_to_atac"] < res["directions"]["foscttm"]["rna_to_atac"]
    assert "foscttm_sinkhorn" not in evaluate_embeddings(rna, atac)
    unpaired = evaluate_embeddings(rna, atac[:200], paired=False, sinkhorn=True)
    assert unpaired["foscttm_sinkhorn"] is None and "not paired" in unpaired["reasons"]["foscttm_sinkhorn"]


def test_match_table_with_sinkhorn_ranks_by_the_plan_and_reports_cosine():
    rna, atac = _hub_pair(n=150, seed=3)
    plain = match.match_table(rna, atac, k=5, paired=True)
    sk = match.match_table(rna, atac, k=5, paired=True, sinkhorn=True)
    q = rna / np.linalg.norm(rna, axis=1, keepdims=True)
    r = atac / np.linalg.norm(atac, axis=1, keepdims=True)
    _, ab = match.sinkhorn_bias(rna, atac)
    first = sk[(sk["modality"] == "rna") & (sk["cell"] == "0")]
    expected = np.argsort(-(q[0] @ r.T + ab), kind="stable")[:5]
    assert first["partner"].astype(int).tolist() == expected.tolist()
    np.testing.assert_allclose(first["similarity"], q[0] @ r[expected].T, atol=1e-5)  # still the cosine
    assert sk["true_partner_rank"].mean() < plain["true_partner_rank"].mean()
    unpaired = match.match_table(rna, atac[:100], k=3, paired=False, sinkhorn=True)
    assert len(unpaired) == (150 + 100) * 3
