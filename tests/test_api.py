"""End to end on tiny synthetic data: train -> release folder -> load -> embed; checkpoints and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import scclip
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError
from scclip.pretrained import load_pretrained
from scclip.training import load_checkpoint

TINY = dict(epochs=3, batch_size=64, patience=5, lr=2e-3)


@pytest.fixture(scope="module")
def mdata():
    return synthetic_multiome(240, n_genes=120, peaks_per_gene=2, seed=1)


@pytest.fixture(scope="module")
def trained(mdata, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    model = scclip.train(mdata, out_dir=out, model_config="tiny", train_config=TINY, holdout_key="batch",
                         holdout=["b2"], val_size=40)
    return model, out


def test_release_folder_is_exactly_the_documented_files(trained):
    _, out = trained
    files = sorted(p.name for p in (out / "model").iterdir())
    assert files == ["README.md", "config.json", "features_atac.tsv.gz", "features_rna.tsv.gz", "model.safetensors",
                     "summary.json"]
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["model"]["n_layers"] == 1 and cfg["preprocessing"]["atac"]["method"] == "tfidf"
    assert set(cfg["feature_space"]["modalities"]) == {"rna", "atac"}
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in out.rglob("*"))


def test_holdout_cells_never_trained_and_scored(trained, mdata):
    model, _ = trained
    s = model.summary
    n_b2 = int((mdata["rna"].obs["batch"] == "b2").sum())
    assert s["n_holdout_cells"] == n_b2
    assert s["n_train_cells"] + s["n_val_cells"] + n_b2 == mdata["rna"].n_obs
    assert 0.0 <= s["holdout_metrics"]["foscttm"] <= 1.0
    assert len(s["history"]) == s["epochs_run"] <= TINY["epochs"]


def test_save_load_roundtrip_gives_identical_embeddings(trained, mdata, tmp_path):
    model, out = trained
    emb1 = scclip.embed(model, mdata)
    loaded = load_pretrained(out)  # run folder resolves to out/model
    emb2 = scclip.embed(loaded, mdata)
    for m in ("rna", "atac"):
        np.testing.assert_array_equal(emb1[m].obsm["X_scclip"], emb2[m].obsm["X_scclip"])
    resaved = loaded.save_pretrained(tmp_path / "again")
    emb3 = scclip.embed(load_pretrained(resaved), mdata)
    np.testing.assert_array_equal(emb1["rna"].obsm["X_scclip"], emb3["rna"].obsm["X_scclip"])


def test_embed_outputs_unit_norm_keeps_obs_and_provenance(trained, mdata):
    model, _ = trained
    emb = scclip.embed(model, mdata)
    z = emb["rna"].obsm["X_scclip"]
    assert z.dtype == np.float32 and z.shape == (mdata.n_obs, model.config.proj_dim)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    assert list(emb["atac"].obs["cell_type"]) == list(mdata["atac"].obs["cell_type"])
    assert emb.uns["scclip"]["paired"] is True
    assert emb["atac"].uns["scclip"]["coverage"]["frac_model_hit"] == pytest.approx(1.0)


def test_embed_single_modality_and_unpaired(trained, mdata):
    model, _ = trained
    only_atac = scclip.embed(model, {"atac": mdata["atac"]})
    assert list(only_atac.mod) == ["atac"] and only_atac.uns["scclip"]["paired"] is False
    both = scclip.embed(model, mdata)
    # one modality: no completion possible, X_scclip is the model's own embedding, and the reason is recorded
    np.testing.assert_allclose(only_atac["atac"].obsm["X_scclip"], both["atac"].obsm["X_scclip_raw"], atol=1e-6)
    assert only_atac.uns["scclip"]["gap"]["closed"] is False
    assert "both modalities" in only_atac.uns["scclip"]["gap"]["reason"]
    assert both.uns["scclip"]["gap"]["closed"] is True


def test_embed_closes_gap_and_keeps_raw(trained, mdata):
    model, _ = trained
    emb = scclip.embed(model, mdata, gap_k=5)
    rec = emb.uns["scclip"]["gap"]
    assert rec["method"] == "cross-modal completion" and rec["k"] == 5
    for m in ("rna", "atac"):
        joint, raw = emb[m].obsm["X_scclip"], emb[m].obsm["X_scclip_raw"]
        assert joint.shape == raw.shape and not np.allclose(joint, raw)
        np.testing.assert_allclose(np.linalg.norm(joint, axis=1), 1.0, rtol=1e-5)
    assert rec["gap_after"]["mean_distance"] < rec["gap_before"]["mean_distance"]
    off = scclip.embed(model, mdata, close_gap=False)
    np.testing.assert_array_equal(off["rna"].obsm["X_scclip"], off["rna"].obsm["X_scclip_raw"])
    assert off.uns["scclip"]["gap"]["closed"] is False


def test_training_learns_better_than_chance(tmp_path):
    data = synthetic_multiome(600, n_genes=120, peaks_per_gene=2, seed=1)
    model = scclip.train(data, out_dir=tmp_path, model_config="tiny",
                         train_config=dict(epochs=12, batch_size=64, lr=2e-3, patience=12), val_size=60)
    assert model.summary["validation"]["foscttm"] < 0.3  # chance is 0.5


def test_checkpoints_hold_no_pickle_and_resume_continues(mdata, tmp_path):
    cfg = dict(epochs=2, batch_size=64, patience=5)
    scclip.train(mdata, out_dir=tmp_path, model_config="tiny", train_config=cfg, val_size=40)
    ck = tmp_path / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == [
        "best.json", "best.safetensors", "last.json", "last.safetensors", "last_ema.json", "last_ema.safetensors"
    ]  # weight averaging is on by default: its state is checkpointed for --resume
    meta = json.loads((ck / "last.json").read_text())
    assert meta["state"]["epoch"] == 2
    model = scclip.train(mdata, out_dir=tmp_path, model_config="tiny", train_config={**cfg, "epochs": 4},
                         val_size=40, resume=True)
    assert model.summary["epochs_run"] == 4
    assert [h["epoch"] for h in model.summary["history"]] == [1, 2, 3, 4]


def test_interrupted_checkpoint_pair_is_safe(mdata, tmp_path):
    from safetensors.torch import load_file, save_file

    scclip.train(mdata, out_dir=tmp_path, model_config="tiny", train_config=dict(epochs=1, batch_size=64), val_size=40)
    js = tmp_path / "checkpoints" / "last.json"
    meta = json.loads(js.read_text())
    token = meta["token"]
    meta["token"] = "different"  # a stale .json (killed between the two renames)
    js.write_text(json.dumps(meta))
    net = load_pretrained(tmp_path).net
    # the metadata inside the .safetensors header win: the checkpoint is still whole
    assert load_checkpoint(tmp_path / "checkpoints" / "last", model=net)["token"] == token
    st = tmp_path / "checkpoints" / "last.safetensors"  # an older checkpoint without metadata in its header
    save_file(load_file(str(st)), str(st), metadata={"token": token})
    with pytest.raises(ScclipError, match="different saves"):
        load_checkpoint(tmp_path / "checkpoints" / "last", model=net)


def test_train_errors_are_clear(mdata, tmp_path):
    with pytest.raises(ScclipError, match="not a column"):
        scclip.train(mdata, out_dir=tmp_path, model_config="tiny", holdout_key="nope", holdout=["x"])
    with pytest.raises(ScclipError, match="has no values"):
        scclip.train(mdata, out_dir=tmp_path, model_config="tiny", holdout_key="batch", holdout=["zzz"])
    with pytest.raises(ScclipError, match="paired rna and atac"):
        scclip.train(scclip.embed.__globals__["md"].MuData({"rna": mdata["rna"]}), out_dir=tmp_path)


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(ScclipError, match="no scCLIP model"):
        load_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ScclipError, match="not valid JSON"):
        load_pretrained(tmp_path / "bad")


def test_tfidf_model_stores_idf(mdata, tmp_path):
    model = scclip.train(mdata, out_dir=tmp_path, model_config="tiny", train_config=dict(epochs=1, batch_size=64),
                         atac_method="tfidf", val_size=40)
    loaded = load_pretrained(tmp_path)
    assert loaded.preprocessing["atac"]["method"] == "tfidf"
    np.testing.assert_array_equal(loaded.idf, model.idf)
    assert torch.isfinite(torch.from_numpy(scclip.embed(loaded, mdata)["atac"].obsm["X_scclip"])).all()


def test_reference_feature_space_keeps_observed_features_only():
    from scclip.api import build_feature_space

    data = synthetic_multiome(80, n_genes=60, peaks_per_gene=2, seed=3)
    space, _ = build_feature_space(data, "mm10:5000", n_patches=8, genome="mm10")
    assert space["rna"].kind == "genes" and space["rna"].observed_only
    assert 0 < space["rna"].n_features <= 60
    assert space["atac"].kind == "bins" and 0 < space["atac"].n_features <= 120
    full, _ = build_feature_space(data, "mm10:5000:all", n_patches=8, genome="mm10")
    assert full["atac"].n_features == 545118 and not full["atac"].observed_only
    with pytest.raises(ScclipError, match="observed"):
        build_feature_space(data, "mm10:5000:some", n_patches=8, genome="mm10")


def test_ema_is_debiased_weighted_average_of_the_steps():
    from scclip.training import Ema as _Ema

    net = torch.nn.Linear(3, 2)
    ema = _Ema(net, 0.9)
    seen = []
    for step in range(1, 6):
        with torch.no_grad():
            net.weight.fill_(float(step))  # the live weights after optimizer step ``step``
        seen.append(float(step))
        ema.update(net, step)
        if step == 1:  # no pull towards the initial weights
            assert torch.allclose(ema.shadow["weight"], net.weight)
    w = 0.9 ** np.arange(4, -1, -1)  # step i weighs decay^(t - i), normalised
    expected = float((w * np.array(seen)).sum() / w.sum())
    assert torch.allclose(ema.shadow["weight"], torch.full((2, 3), expected))


def test_ema_weights_are_validated_released_and_resumed(tmp_path, monkeypatch):
    data = synthetic_multiome(160, n_genes=60, peaks_per_gene=2, seed=2)
    tc = dict(epochs=2, batch_size=32, lr=2e-3, patience=5, ema_decay=0.9)
    model = scclip.train(data, out_dir=tmp_path / "a", model_config="tiny", train_config=tc, val_size=30)
    ckpt = tmp_path / "a" / "checkpoints"
    assert (ckpt / "last_ema.safetensors").is_file()
    live = load_checkpoint(ckpt / "last", model=model.net)  # the live weights differ from the released average
    released = scclip.load_pretrained(tmp_path / "a")
    assert any(
        not torch.equal(a, b)
        for (k, a), b in zip(model.net.state_dict().items(), released.net.state_dict().values(), strict=True)
        if a.is_floating_point()
    )
    assert live["train_config"]["ema_decay"] == 0.9
    # interrupted after epoch 1 and resumed: the same weights as the uninterrupted run (the average continues)
    import scclip.training._loop as T  # the loop's own reference to save_checkpoint

    real_save = T.save_checkpoint

    def save_then_stop(stem, **kw):
        real_save(stem, **kw)
        if str(stem).endswith("last"):
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        scclip.train(data, out_dir=tmp_path / "b", model_config="tiny", train_config=tc, val_size=30)
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    resumed = scclip.train(data, out_dir=tmp_path / "b", model_config="tiny", train_config=tc, val_size=30,
                           resume=True)
    for a, b in zip(released.net.state_dict().values(), resumed.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ScclipError, match="ema_decay"):
        scclip.train(data, out_dir=tmp_path / "c", model_config="tiny", train_config={**tc, "ema_decay": 1.0},
                     val_size=30)
