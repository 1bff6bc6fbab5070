"""Chunked metrics against naive full-matrix implementations, plus evaluate() on MuData."""

from __future__ import annotations

import json
from collections import Counter

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_samples
from sklearn.neighbors import NearestNeighbors

from scclip import metrics as M
from scclip.errors import ScclipError
from scclip.evaluate import evaluate, evaluate_embeddings


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(60, 8))
    return r, r + rng.normal(size=r.shape) * 1.5


# --------------------------------------------------------------------------- naive references
def naive_fos(s):
    n = s.shape[0]
    out = []
    for i in range(n):
        others = np.delete(s[i], i)
        out.append((np.sum(others > s[i, i]) + 0.5 * np.sum(others == s[i, i])) / (n - 1))
    return np.mean(out)


def naive_topk(s, k):
    return np.mean([i in np.argsort(-s[i], kind="stable")[:k] for i in range(s.shape[0])])


def naive_softmax_diag(s, t):
    z = np.exp(s / t - (s / t).max(1, keepdims=True))
    return np.mean(np.diag(z / z.sum(1, keepdims=True)))


# --------------------------------------------------------------------------- paired metrics
@pytest.mark.parametrize("chunk", [None, 7])
def test_foscttm_matches_naive_cosine(pair, chunk):
    r, a = pair
    s = _unit(r) @ _unit(a).T
    res = M.foscttm(r, a, chunk_size=chunk)
    assert res["rna_to_atac"] == pytest.approx(naive_fos(s), abs=1e-9)
    assert res["atac_to_rna"] == pytest.approx(naive_fos(s.T), abs=1e-9)
    assert res["mean"] == pytest.approx((naive_fos(s) + naive_fos(s.T)) / 2)
    assert 0.05 < res["mean"] < 0.45  # informative but imperfect


def test_foscttm_euclidean_matches_naive(pair):
    r, a = pair
    d = ((r[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    res = M.foscttm(r, a, metric="euclidean", chunk_size=9)
    assert res["rna_to_atac"] == pytest.approx(naive_fos(-d), abs=1e-9)
    assert res["atac_to_rna"] == pytest.approx(naive_fos(-d.T), abs=1e-9)
    assert res["mean"] != pytest.approx(M.foscttm(r, a)["mean"], abs=1e-6)  # the metric really changes


def test_foscttm_and_topk_ties_count_half():
    r = np.array([[1.0, 0], [0, 1], [0, 1]])
    a = np.array([[1.0, 0], [1, 0], [0, 1]])
    # cell 0: one tie -> 0.5/2; cell 1: one better + one tie -> 1.5/2; cell 2: none better -> 0.
    assert M.foscttm(r, a)["rna_to_atac"] == pytest.approx((0.25 + 0.75 + 0) / 3)
    # top-1: cell 0 wins a coin flip (1/2), cell 1 never, cell 2 always.
    assert M.topk_accuracy(r, a, k=1)["rna_to_atac"] == pytest.approx(0.5)
    assert M.topk_accuracy(r, a, k=2)["rna_to_atac"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_zero_embedding_is_chance():
    rng = np.random.default_rng(1)
    r, a = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    r[3] = 0.0  # all candidates tie with the partner
    with np.errstate(invalid="ignore"):
        s = np.nan_to_num(_unit(r)) @ _unit(a).T
    assert M.foscttm(r, a)["rna_to_atac"] == pytest.approx(naive_fos(s))


@pytest.mark.parametrize("chunk", [None, 11])
def test_topk_matches_naive(pair, chunk):
    r, a = pair
    s = _unit(r) @ _unit(a).T
    res = M.topk_accuracy(r, a, k=(1, 5), chunk_size=chunk)
    for k in (1, 5):
        assert res[k]["rna_to_atac"] == pytest.approx(naive_topk(s, k))
        assert res[k]["atac_to_rna"] == pytest.approx(naive_topk(s.T, k))
    assert res[1]["mean"] < res[5]["mean"]
    assert M.topk_accuracy(r, a, k=5)["mean"] == pytest.approx(res[5]["mean"])


@pytest.mark.parametrize("t", [0.05, 0.5])
def test_match_probability_matches_naive(pair, t):
    r, a = pair
    s = _unit(r) @ _unit(a).T
    res = M.match_probability(r, a, temperature=t, chunk_size=13)
    assert res["rna_to_atac"] == pytest.approx(naive_softmax_diag(s, t), rel=1e-5)
    assert res["atac_to_rna"] == pytest.approx(naive_softmax_diag(s.T, t), rel=1e-5)


def test_paired_metrics_agree_with_single_metrics(pair):
    r, a = pair
    pm = M.paired_metrics(r, a, ks=(1, 5), temperatures=(0.05, 0.2))
    assert pm["foscttm"] == pytest.approx(M.foscttm(r, a))
    assert pm["top5"] == pytest.approx(M.topk_accuracy(r, a, k=5))
    assert pm["match_probability@0.2"] == pytest.approx(M.match_probability(r, a, temperature=0.2))


def test_paired_metrics_reject_bad_input(pair):
    r, a = pair
    with pytest.raises(ScclipError, match="same cell"):
        M.foscttm(r, a[:-1])
    with pytest.raises(ScclipError, match="dimensions"):
        M.foscttm(r, a[:, :3])
    with pytest.raises(ScclipError, match="NaN"):
        M.foscttm(np.full_like(r, np.nan), a)
    with pytest.raises(ScclipError, match="metric"):
        M.foscttm(r, a, metric="manhattan")
    with pytest.raises(ScclipError, match="temperature"):
        M.match_probability(r, a, temperature=0)


# --------------------------------------------------------------------------- labels and mixing
def test_celltype_asw_matches_sklearn_and_subsamples():
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 3, 90)
    x = rng.normal(size=(90, 5)) + np.eye(5)[lab] * 3
    want = (silhouette_samples(x, lab, metric="cosine").mean() + 1) / 2
    assert M.celltype_asw(x, lab) == pytest.approx(want)
    assert want > 0.6
    sub = M.celltype_asw(x, lab, max_cells=40, seed=3)
    assert sub == M.celltype_asw(x, lab, max_cells=40, seed=3)
    assert sub != pytest.approx(want)
    with pytest.raises(ScclipError, match="distinct labels"):
        M.celltype_asw(x, np.zeros(90))


def naive_mixing(r, a, k):
    x = _unit(np.vstack([r, a]))
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    mod = np.r_[np.zeros(len(r)), np.ones(len(a))]
    ent = []
    for i in range(len(x)):
        p = mod[np.argsort(-s[i], kind="stable")[:k]].mean()
        ent.append(0.0 if p in (0, 1) else -(p * np.log2(p) + (1 - p) * np.log2(1 - p)))
    return np.mean(ent)


def test_modality_mixing_matches_naive(pair):
    r, a = pair
    assert M.modality_mixing(r, a, k=10, chunk_size=17) == pytest.approx(naive_mixing(r, a, 10))
    rng = np.random.default_rng(4)
    same = rng.normal(size=(50, 6))
    assert M.modality_mixing(same, same + 1e-3 * rng.normal(size=same.shape), k=10) > 0.9
    assert M.modality_mixing(same + 20, -same - 20, k=10) == pytest.approx(0.0)


def naive_scalex(x, labels, pools, k):
    """SCALEX's batch_entropy_mixing_score with the pools given (it draws them with np.random)."""
    uniq = np.unique(labels)
    big_p = np.array([np.mean(labels == u) for u in uniq])
    nn_ = NearestNeighbors(n_neighbors=k + 1).fit(x)
    graph = nn_.kneighbors_graph(x) - np.eye(len(x))
    score = 0.0
    for idx in pools:
        ents = []
        for i in idx:
            nb = labels[np.flatnonzero(graph[i] > 0)]
            p = np.array([np.mean(nb == u) for u in uniq])
            q = (p / big_p) / (p / big_p).sum()
            ents.append(-(q * np.log(q + 1e-8)).sum())
        score += np.mean(ents)
    return score / len(pools) / np.log2(len(uniq))


def test_batch_entropy_mixing_matches_scalex():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 4))
    x[:30] += 1.5
    lab = np.r_[np.zeros(50, dtype=int), np.ones(30, dtype=int)]
    pools = np.random.default_rng(9).integers(0, 80, size=(6, 10))
    got = M.batch_entropy_mixing_score(x, lab, n_neighbors=12, n_pools=6, n_samples_per_pool=10, seed=9)
    assert got == pytest.approx(naive_scalex(x, lab, pools, 12))
    assert 0 < got < np.log(2) + 1e-9


def naive_vote(ref, lab, query, k):
    s = _unit(query) @ _unit(ref).T
    out = []
    for i in range(len(query)):
        nb = lab[np.argsort(-s[i], kind="stable")[:k]]
        cnt = Counter(nb)
        top = max(cnt.values())
        out.append(next(v for v in nb if cnt[v] == top))  # tie -> nearest of the tied labels
    return np.array(out)


def test_label_transfer_matches_naive(pair):
    r, a = pair
    rng = np.random.default_rng(6)
    lab = rng.choice(["a", "b", "c"], size=len(r))
    want_pred = naive_vote(r, lab, a, 4)  # k=4 makes vote ties common
    want = np.mean(want_pred == lab)
    assert M.label_transfer_accuracy(r, lab, a, lab, k=4, chunk_size=5) == pytest.approx(want)
    pred, share = M.knn_vote(r, lab, a, k=4)
    assert (pred == want_pred).all()
    assert set(np.round(share * 4)) <= {1, 2, 3, 4}


# --------------------------------------------------------------------------- evaluate()
def _mdata(r, a, labels, *, shuffle_atac=False):
    names = [f"c{i}" for i in range(len(r))]
    obs = pd.DataFrame({"cell_type": labels}, index=names)
    ra = ad.AnnData(
        np.zeros((len(r), 1), dtype=np.float32), obs=obs.copy(), var=pd.DataFrame(index=["Gene1"])
    )
    aa = ad.AnnData(
        np.zeros((len(a), 1), dtype=np.float32), obs=obs.copy(), var=pd.DataFrame(index=["chr1:1-9"])
    )
    ra.obsm["X_scclip"], aa.obsm["X_scclip"] = r, a
    if shuffle_atac:
        aa = aa[np.random.default_rng(7).permutation(len(a))].copy()
    return md.MuData({"rna": ra, "atac": aa})


def test_evaluate_aligns_by_name_and_is_json_safe(pair):
    r, a = pair
    lab = np.random.default_rng(8).choice(["x", "y"], size=len(r))
    res = evaluate(_mdata(r, a, lab, shuffle_atac=True), label_key="cell_type", temperature=0.1)
    json.dumps(res)
    direct = evaluate_embeddings(r, a, rna_labels=lab, atac_labels=lab, temperature=0.1)
    for key in ("foscttm", "top1", "top5", "match_probability", "match_probability_learned_T"):
        assert res[key] == pytest.approx(direct[key])
    assert res["foscttm"] == pytest.approx(M.foscttm(r, a)["mean"])
    assert res["directions"]["top1"]["rna_to_atac"] == pytest.approx(
        M.topk_accuracy(r, a, k=1)["rna_to_atac"]
    )
    assert res["label_transfer_accuracy"] == pytest.approx(M.label_transfer_accuracy(r, lab, a, lab))
    assert res["n_cells"] == {"rna": 60, "atac": 60, "paired": 60}
    assert res["reasons"] == {}


def test_per_modality_asw_is_blind_to_a_modality_gap():
    # Three overlapping types. A modality gap is made by rotating the ATAC cells out of the RNA cells' subspace:
    # a' = [a cos t, a sin t], r' = [r, 0], so every cosine within a modality is unchanged and every cosine across
    # modalities is scaled by cos t. The ASW over both modalities moves; the ASW within each modality must not.
    rng = np.random.default_rng(4)
    lab = np.repeat(["a", "b", "c"], 40)
    centres = rng.normal(size=(3, 6))
    r = centres[np.repeat([0, 1, 2], 40)] + rng.normal(size=(120, 6)) * 1.2
    a = r + rng.normal(size=r.shape) * 0.5
    r2 = np.hstack([r, np.zeros_like(r)])
    res = {}
    for t in (0.0, 1.2):
        a2 = np.hstack([a * np.cos(t), a * np.sin(t)])
        res[t] = evaluate_embeddings(r2, a2, rna_labels=lab, atac_labels=lab)
    for m in ("rna", "atac"):
        assert res[1.2][f"asw_cell_type_{m}"] == pytest.approx(res[0.0][f"asw_cell_type_{m}"])
    assert abs(res[1.2]["asw_cell_type"] - res[0.0]["asw_cell_type"]) > 0.02
    assert res[0.0]["asw_cell_type_atac"] == pytest.approx(M.celltype_asw(a, lab))


def test_evaluate_explains_missing_metrics(pair):
    r, a = pair
    m = _mdata(r, a, np.zeros(len(r)))
    m.mod["atac"].obs_names = [f"other{i}" for i in range(len(a))]
    res = evaluate(m)
    assert res["foscttm"] is None and "share 0 obs_names" in res["reasons"]["foscttm"]
    assert res["asw_cell_type"] is None and "label_key" in res["reasons"]["asw_cell_type"]
    assert res["mixing_entropy"] is not None
    res = evaluate(_mdata(r, a, np.zeros(len(r))), label_key="nope")
    assert "not a column" in res["reasons"]["label_transfer_accuracy"]
    res = evaluate(_mdata(r, a, np.zeros(len(r))), label_key="cell_type")
    assert res["label_transfer_accuracy"] == 1.0 and "distinct labels" in res["reasons"]["asw_cell_type"]
    with pytest.raises(ScclipError, match="obsm has no 'X_other'"):
        evaluate(_mdata(r, a, np.zeros(len(r))), key="X_other")


@pytest.mark.realdata
def test_evaluate_on_real_mudata(snare_h5mu):
    m = md.read_h5mu(snare_h5mu)
    m = m[m.obs["batch"] == "09J"].copy()  # one library (841 cells) keeps the test quick
    rng = np.random.default_rng(0)
    for mod in ("rna", "atac"):
        m.mod[mod].obsm["X_scclip"] = rng.normal(size=(m.mod[mod].n_obs, 16)).astype(np.float32)
    res = evaluate(m, label_key="cell_type")
    assert res["n_cells"]["paired"] == m.mod["rna"].n_obs == 841
    assert abs(res["foscttm"] - 0.5) < 0.02  # random embedding: chance
    assert res["mixing_entropy"] > 0.9 and res["reasons"] == {}
    assert 0.2 < res["label_transfer_accuracy"] < 0.5
