"""The inverted-file top-k (the scalable neighbour search of gap closing): exact when every cluster is probed,
seeded, close to the exact search on structured embeddings, and chosen by ``search="auto"`` only at scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scclip import gap
from scclip.errors import ScclipError
from scclip.match import topk_partners
from scclip.metrics import AUTO_IVF_PAIRS, resolve_search, topk_chunked, topk_ivf


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def two_modalities(n: int, *, d: int = 32, types: int = 12, rank: int = 6, seed: int = 0):
    """Paired unit embeddings of ``types`` cell types on a ``rank``-dimensional manifold each, the second
    modality shifted by a constant offset (a modality gap), both with a little isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    centres = unit(torch.randn(types, d, generator=g)) * 2
    basis = torch.randn(types, rank, d, generator=g) * 0.4
    t = torch.randint(types, (n,), generator=g)
    latent = torch.randn(n, rank, generator=g)
    base = centres[t] + torch.einsum("nr,nrd->nd", latent, basis[t])
    offset = unit(torch.randn(1, d, generator=g)) * 0.8
    rna = unit(base + 0.05 * torch.randn(n, d, generator=g))
    atac = unit(base + offset + 0.05 * torch.randn(n, d, generator=g))
    return rna, atac, t.numpy()


def recall(exact: torch.Tensor, approx: torch.Tensor) -> float:
    e, a = exact.numpy(), approx.numpy()
    return float(np.mean([len(np.intersect1d(x, y)) / e.shape[1] for x, y in zip(e, a, strict=False)]))


def test_probing_every_cluster_is_the_exact_search():
    q, r, _ = two_modalities(700, seed=1)
    ei, ev = topk_chunked(q, r, 9)
    ai, av, info = topk_ivf(q, r, 9, n_lists=20, n_probe=20)
    assert info == {"search": "ivf", "n_lists": 20, "n_probe": 20, "seed": 0}
    torch.testing.assert_close(av, ev, rtol=0, atol=1e-5)
    assert recall(ei, ai) == 1.0


def test_ivf_finds_most_exact_neighbours_with_its_defaults():
    q, r, _ = two_modalities(6000, seed=2)
    ei, _ = topk_chunked(q, r, 15)
    ai, av, info = topk_ivf(q, r, 15)
    assert info["n_lists"] == round(2 * 6000**0.5) and info["n_probe"] == 8
    assert recall(ei, ai) > 0.9
    # every returned score is the true cosine of the returned cell, best first
    torch.testing.assert_close(av, (q[:, None, :] * r[ai]).sum(-1), rtol=0, atol=1e-5)
    assert bool((av[:, :-1] >= av[:, 1:]).all())
    assert all(len(set(row)) == 15 for row in ai.numpy())


def test_ivf_is_seeded():
    q, r, _ = two_modalities(1500, seed=3)
    a1, v1, _ = topk_ivf(q, r, 5, seed=4)
    a2, v2, _ = topk_ivf(q, r, 5, seed=4)
    assert torch.equal(a1, a2) and torch.equal(v1, v2)


def test_rows_whose_clusters_hold_too_few_cells_are_searched_exactly():
    q, r, _ = two_modalities(300, seed=5)
    _, ev = topk_chunked(q, r, 6)
    _, av, _ = topk_ivf(
        q, r, 6, n_lists=300, n_probe=2
    )  # about one cell per cluster: fewer than 6 candidates
    torch.testing.assert_close(av, ev, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"n_lists": 0}, "n_lists must be between 1"),
        ({"n_lists": 10, "n_probe": 11}, "n_probe must be between"),
    ],
)
def test_bad_ivf_parameters_are_refused(kw, words):
    q, r, _ = two_modalities(50)
    with pytest.raises(ScclipError, match=words):
        topk_ivf(q, r, 3, **kw)


def test_auto_is_exact_below_the_threshold_and_on_a_gpu():
    side = int(AUTO_IVF_PAIRS**0.5)
    assert resolve_search("auto", 8685, 8685) == "exact"
    assert resolve_search("auto", side + 1, side + 1) == "ivf"
    assert resolve_search("auto", side + 1, side + 1, "cuda") == "exact"
    assert resolve_search("ivf", 10, 10) == "ivf"
    with pytest.raises(ScclipError, match="search must be one of"):
        resolve_search("approximate", 10, 10)
    q, r, _ = two_modalities(40)
    with pytest.raises(ScclipError, match="search must be one of"):
        topk_partners(q, r, k=3, search="fast", candidate_bias=np.zeros(40))


def test_topk_partners_and_close_gap_take_the_inverted_file():
    rna, atac, _ = two_modalities(5000, seed=6)
    ii, si = topk_partners(rna, atac, k=15, search="ivf")
    ie, _ = topk_partners(rna, atac, k=15, search="exact")
    assert recall(torch.from_numpy(ie), torch.from_numpy(ii)) > 0.9
    assert si.dtype == np.float32 and si.shape == (5000, 15)
    jr_e, ja_e, info_e = gap.close_gap(rna, atac, search="exact")
    jr_i, ja_i, info_i = gap.close_gap(rna, atac, search="ivf")
    assert info_e["search"] == "exact" and info_i["search"] == "ivf"
    assert gap.close_gap(rna, atac)[2]["search"] == "exact"  # auto, 5,000 cells
    # the joint embedding barely moves: each cell averages 15 neighbours, nearly all of them the same
    assert float(np.median((jr_e * jr_i).sum(1))) > 0.999 and float(np.median((ja_e * ja_i).sum(1))) > 0.999
    assert info_i["gap_after"]["mean_distance"] < 0.5 * info_i["gap_before"]["mean_distance"]
