"""The feature views of the Explore page (issue 17): colour by a feature, differential features of a selection,
per-patch attribution and the h5ad hand-off. Tiny seeded data on the CPU; real-data checks are marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scclip
from scclip import explore
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    return synthetic_multiome(n_cells=300, seed=0)


@pytest.fixture(scope="module")
def model():
    return scclip.load_pretrained(REPO / "pretrained" / "demo-synthetic")


@pytest.fixture(scope="module")
def joint(model, data):
    return explore.joint_from_embedded(scclip.embed(model, data))


@pytest.fixture(scope="module")
def store(data, joint):
    return explore.FeatureStore(data, joint, k=10)


# --------------------------------------------------------------------------- 1. colour by a feature
def test_queries_resolve_to_typed_specs(store, data):
    gene = data["rna"].var_names[5]
    assert store.resolve(gene.upper()).kind == "gene"
    assert store.resolve(f"  {gene.lower()} ").columns == (5,)
    peak = data["atac"].var_names[3]
    c, s, e = peak.replace(":", "-").split("-")
    for q in (peak, f"{c}-{s}-{e}", f"{c}_{s}_{e}", f"{c}:{int(s):,}-{int(e):,}"):
        spec = store.resolve(q)
        assert (spec.kind, spec.modality) == ("peak", "atac") and 3 in spec.columns
    for q in (f"gene activity of {gene}", f"{gene} activity", f"activity:{gene}"):
        spec = store.resolve(q)
        assert (spec.kind, spec.modality, spec.genes) == ("activity", "atac", (gene,))
    spec = store.resolve(", ".join(data["rna"].var_names[:4]))
    assert spec.kind == "gene_set" and len(spec.columns) == 4


def test_unknown_queries_say_so_in_one_line_with_suggestions(store, data):
    gene = data["rna"].var_names[5]
    with pytest.raises(ScclipError, match="did you mean") as err:
        store.resolve(gene[:-1] + "x" + gene[-1])
    assert "\n" not in str(err.value)
    with pytest.raises(ScclipError, match="no ATAC peak or bin overlaps chr1:1-2; nearest peak"):
        store.resolve("chr1:1-2")


def test_rna_values_are_log1p_cp10k_and_atac_cells_are_imputed_from_partners(store, data, joint):
    import scanpy as sc

    from scclip.match import topk_partners

    gene = data["rna"].var_names[7]
    colors = store.colors(gene)
    ref = data["rna"].copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    n = joint.n_rna
    np.testing.assert_allclose(colors.measured[:n], ref[:, gene].X.toarray().ravel(), rtol=1e-5)
    assert np.isnan(colors.measured[n:]).all() and np.isnan(colors.imputed[:n]).all()
    idx, _ = topk_partners(joint.Z[n:], joint.Z[:n], k=10)
    np.testing.assert_allclose(colors.imputed[n:], colors.measured[idx].mean(axis=1), rtol=1e-6)
    # paired data: an ATAC cell's own RNA value is its barcode's expression
    np.testing.assert_allclose(colors.own[n:], colors.measured[joint.partner[n:]])
    drawn = colors.values(paired_own=True)
    assert not np.isnan(drawn).any() and "imputed" in colors.note


def test_gene_activity_is_counts_over_body_and_promoter(store, data):
    gene = data["rna"].var_names[11]
    spec = store.resolve(f"gene activity of {gene}")
    g = store.gene_table.set_index("gene_name").loc[gene]
    var = data["atac"].var
    near = (var["chrom"] == g["chrom"]) & (var["start"] < g["end"] + 2000) & (var["end"] > g["start"] - 2000)
    expected = np.asarray(data["atac"].X[:, near.to_numpy()].sum(axis=1)).ravel()
    colors = store.colors(spec)
    np.testing.assert_allclose(colors.measured[store.cells("atac")], expected)


def test_gene_set_score_uses_scanpy(store, data):
    genes = list(data["rna"].var_names[:6])
    colors = store.colors(" ".join(genes))
    assert np.isfinite(colors.measured[store.cells("rna")]).all()
    assert np.isfinite(colors.imputed[store.cells("atac")]).all()


def test_single_modality_data_colour_without_a_cross_modal_view(data):
    import mudata as md

    rna_only = md.MuData({"rna": data["rna"].copy()})
    store = explore.FeatureStore(rna_only)
    colors = store.colors(data["rna"].var_names[0])
    assert colors.own is None and np.isnan(colors.imputed).all()
    with pytest.raises(ScclipError, match="needs RNA and ATAC cells; this dataset has only RNA cells"):
        store.partners("rna")
    with pytest.raises(ScclipError, match="needs ATAC cells"):
        store.resolve("gene activity of Xkr4")


def test_nearest_gene():
    table = pd.DataFrame(
        {
            "gene_name": ["A", "B", "C"],
            "chrom": ["chr1"] * 3,
            "start": [100, 1000, 5000],
            "end": [4000, 1200, 6000],
        }
    )
    names, dist = explore.nearest_genes(
        ["chr1", "chr1", "chr1", "chr2"], [1100, 4100, 5900, 0], [1150, 4200, 7000, 5], table
    )
    assert names.tolist() == ["A", "A", "C", ""]
    assert dist.tolist() == [0, 100, 0, -1]


# --------------------------------------------------------------------------- 2. differential features
def test_markers_of_a_cell_type_are_its_planted_genes_and_peaks(store, data):
    cells = explore.category_cells(store, "cell_type", "type0")
    rna = explore.differential_features(store, cells, modality="rna", n_top=10)
    assert list(rna.columns[:6]) == [
        "feature",
        "score",
        "log2 fold change",
        "adjusted p",
        "fraction A",
        "fraction B",
    ]
    t0 = (data["rna"].obs["cell_type"] == "type0").to_numpy()
    X = data["rna"].X.toarray()
    lfc = np.log2(X[t0].mean(0) + 1e-3) - np.log2(X[~t0].mean(0) + 1e-3)
    top_true = set(data["rna"].var_names[np.argsort(-lfc)[:30]])
    assert len(set(rna["feature"][:5]) & top_true) >= 4
    assert (rna["log2 fold change"][:5] > 0).all() and (rna["adjusted p"][:5] < 1e-3).all()
    atac = explore.differential_features(store, ("cell_type", "type0"), modality="atac", n_top=10)
    assert {"nearest gene", "distance (bp)"} <= set(atac.columns) and (atac["nearest gene"] != "").all()
    csv = explore.differential_csv(atac)
    assert pd.read_csv(__import__("io").BytesIO(csv), comment="#").shape == atac.shape


def test_selection_of_atac_cells_tests_their_rna_profiles_and_subsamples_with_a_note(store):
    atac_cells = store.cells("atac")[:150]
    df = explore.differential_features(store, atac_cells, modality="rna", max_cells=100, seed=1)
    assert "own RNA profiles" in df.attrs["note"] and "a random 100 of its 150 cells" in df.attrs["note"]
    assert df.attrs["n_a"] == 100
    with pytest.raises(ScclipError, match="at least 2 RNA cells"):
        explore.differential_features(store, [0], modality="rna")


def test_dot_plot(store):
    df = explore.differential_features(store, ("cell_type", "type1"), modality="rna", n_top=5)
    fig = explore.dot_plot(store, df["feature"], modality="rna", groupby="cell_type")
    assert len(fig.data[0].x) == 5 * 5


@pytest.mark.realdata
def test_real_data_colour_and_markers(snare_h5mu):
    import time

    import mudata as md

    mdata = md.read_h5mu(snare_h5mu)
    store = explore.FeatureStore(mdata)
    assert store.genome == "mm10"
    colors = store.colors("gene activity of Gad1")
    assert np.nanmax(colors.measured) > 0
    assert store.resolve("GAD1").kind == "gene"
    t = time.perf_counter()
    df = explore.differential_features(
        store, ("cell_type", mdata["rna"].obs["cell_type"].iloc[0]), modality="atac"
    )
    assert time.perf_counter() - t < 30 and (df["nearest gene"] != "").all()


# --------------------------------------------------------------------------- 3. genome view (patch attribution)
def _planted_pair(model, *, n=60, rna_patch=3, atac_patch=5):
    """``n`` synthetic cells twice: as they are (group 'reference') and with one planted region per modality
    (group 'planted'): +10 counts on every gene of RNA patch ``rna_patch``, and every peak in ATAC patch
    ``atac_patch`` (of the model's bins) open."""
    import anndata as ad
    import mudata as md

    from scclip.features import align_features

    base = synthetic_multiome(n_cells=n, seed=0)
    fs = model.feature_space
    rna, atac = base["rna"], base["atac"]
    genes = np.flatnonzero(
        pd.Series(fs["rna"].patch, index=fs["rna"].names).reindex(rna.var_names) == rna_patch
    )
    to_bins = align_features(atac, fs["atac"]).transform(sp.identity(atac.n_vars, format="csr"))
    peaks = np.unique(to_bins[:, np.flatnonzero(fs["atac"].patch == atac_patch)].nonzero()[0])
    X, Y = rna.X.toarray(), atac.X.toarray()
    X[:, genes] += 10
    Y[:, peaks] = np.maximum(Y[:, peaks], 1)

    def both(a, M):
        out = ad.concat([a, ad.AnnData(sp.csr_matrix(M), obs=a.obs.copy(), var=a.var.copy())])
        out.obs_names = [f"{x}-{k}" for k in ("ref", "planted") for x in a.obs_names]
        out.var = a.var.copy()
        out.obs["group"] = pd.Categorical(np.repeat(["reference", "planted"], n))
        return out

    return md.MuData({"rna": both(rna, X), "atac": both(atac, Y)})


@pytest.fixture(scope="module")
def attribution(model):
    calls = []
    df = explore.patch_attribution(
        model,
        _planted_pair(model),
        ("group", "planted"),
        steps=16,
        budget=None,
        progress=lambda f, m: calls.append(f),
    )
    return df, calls


def test_the_planted_region_ranks_first(attribution):
    df, calls = attribution
    assert set(df.columns) >= {"modality", "patch", "chrom", "start", "end", "attribution", "top_features"}
    top = df.sort_values("attribution", ascending=False).groupby("modality")["patch"].first()
    assert top.to_dict() == {"rna": 3, "atac": 5}
    assert calls and calls[-1] == pytest.approx(1.0) and calls == sorted(calls)


def test_integrated_gradients_are_complete(attribution):
    df, _ = attribution
    for m, check in df.attrs["check"].items():
        # each cell: IG summed over patches = s(x) - s(baseline), up to the 16-point quadrature error
        assert check["group_ig_sum"] == pytest.approx(check["group_output_minus_baseline"], rel=1e-2), m
        # group minus reference: the baseline cancels
        assert check["attribution_sum"] == pytest.approx(check["target_difference"], abs=2e-3), m
        assert df[df.modality == m]["attribution"].sum() == pytest.approx(check["attribution_sum"])


def test_patch_coordinates_come_from_the_feature_space(attribution, model):
    df, _ = attribution
    feats = model.feature_space["rna"].to_frame()
    row = df[(df.modality == "rna") & (df.patch == 3)].iloc[0]
    on = feats[(feats.patch == 3) & (feats.chrom == row["chrom"])]
    assert (row["start"], row["end"]) == (on["start"].min(), on["end"].max())
    assert row["top_features"].split(" ")[0] in set(feats[feats.patch == 3]["name"])


def test_sampled_path_and_genome_track(model, attribution):
    exact, _ = attribution
    nodes, weights = explore.path_points(10, 32, 40)  # over budget: the fewest points, 4 midpoints
    assert nodes.shape == weights.shape == (4, 10)
    np.testing.assert_allclose(nodes[:, 0], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(weights.sum(0), 1.0)
    assert explore.path_points(10, 32, None)[0].shape == (32, 10)  # within budget: every step
    assert explore.path_points(10, 32, 100)[0].shape == (10, 10)
    fig = explore.genome_track(exact, genome="mm10")
    assert len(fig.data) == 2 and "attribution" in fig.data[0].hovertext[0]
    with pytest.raises(ScclipError, match="steps must be at least 1"):
        explore.patch_attribution(model, _planted_pair(model, n=4), [0], steps=0)


# --------------------------------------------------------------------------- 4. hand-off
@pytest.mark.parametrize("part", ["joint", "rna", "atac"])
def test_h5ad_hand_off_reads_back_with_anndata(tmp_path, joint, data, part):
    import anndata as ad

    j = explore.Joint(
        joint.Z, joint.obs.copy(), joint.n_rna, joint.paired, joint.partner, info=dict(joint.info)
    )
    j.umap = np.random.default_rng(0).normal(size=(j.n, 2)).astype(np.float32)
    explore.store_transfer(j, "cell_type", "RNA", explore.transfer(j, "cell_type", source="RNA", k=5))
    path = tmp_path / f"{part}.h5ad"
    path.write_bytes(explore.h5ad_bytes(j, part, data=data))
    back = ad.read_h5ad(path)
    n = {"joint": j.n, "rna": j.n_rna, "atac": j.n - j.n_rna}[part]
    assert back.n_obs == n and back.obs_names.is_unique
    assert back.obsm["X_umap"].shape == (n, 2) and back.obsm["X_scclip"].shape == (n, j.Z.shape[1])
    assert {"cell_type", "transferred cell_type", "transfer confidence", "modality"} <= set(back.obs.columns)
    assert isinstance(back.obs["transferred cell_type"].dtype, pd.CategoricalDtype)
    assert back.n_vars == (0 if part == "joint" else data[part].n_vars)


def test_h5ad_needs_a_umap(joint):
    j = explore.Joint(joint.Z, joint.obs, joint.n_rna, joint.paired, joint.partner)
    with pytest.raises(ScclipError, match="compute the UMAP first"):
        explore.h5ad_bytes(j)
