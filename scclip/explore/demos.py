"""Demo datasets and the app's default (model, dataset)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import mudata as md

from scclip.errors import ScclipError
from scclip.explore.constants import SNARE_DEMO_MODEL, SNARE_FILE, SNARE_TEST_LIBRARIES
from scclip.explore.locations import data_dir


@dataclass
class Demo:
    key: str
    label: str
    description: str
    available: bool = True
    reason: str = ""


def list_demos() -> list[Demo]:
    snare = data_dir() / SNARE_FILE
    have = snare.is_file()
    why = "" if have else f"{snare} is absent (set SCCLIP_DATA_DIR to the folder holding {SNARE_FILE})"
    return [
        Demo(
            "snare-test",
            "SNARE-seq mouse cortex, held-out libraries 09I/09J (real, paired)",
            "Chen et al. 2019 (GSE126074): 1,717 adult mouse cortex cells from sequencing libraries 09I and "
            f"09J, which the default model {SNARE_DEMO_MODEL} never saw (mouse-cortex-snareseq was trained on "
            "all ten libraries, these included). Paired RNA + ATAC, 15 cell types.",
            have,
            why,
        ),
        Demo(
            "snare-all",
            "SNARE-seq mouse cortex, all 10 libraries (real, paired)",
            f"All 8,685 cells (libraries 09A-09J). {SNARE_DEMO_MODEL} was trained on 09A-09H (09I/09J held out); "
            "mouse-cortex-snareseq on all ten.",
            have,
            why,
        ),
        Demo(
            "snare-unpaired",
            "SNARE-seq 09I RNA vs 09J ATAC (real, unpaired)",
            "RNA of library 09I and ATAC of library 09J: different cells, so matching and label transfer "
            "work without pairing information.",
            have,
            why,
        ),
        Demo(
            "synthetic",
            "Synthetic multiome (simulated, paired)",
            "Simulated paired RNA + ATAC cells (scclip.datasets.synthetic_multiome, seed 0, 5 cell types, "
            "mm10 genes): not biology, only a quick offline demo.",
        ),
        Demo(
            "synthetic-unpaired",
            "Synthetic multiome, RNA and ATAC of different cells (simulated, unpaired)",
            "The simulator's RNA for one half of the cells and ATAC for the other half.",
        ),
    ]


def synthetic_cells(model_summary: dict | None = None) -> int:
    """Cells of the synthetic demo: as many as the model's synthetic training data had (600 otherwise), so
    that the simulator (seeded) produces the same features."""
    s = model_summary or {}
    n = (s.get("pairing") or {}).get("n_rna")
    return int(n) if n and "synthetic" in str(s.get("data") or "synthetic") else 600


def load_demo(key: str, *, model_summary: dict | None = None) -> md.MuData:
    """A demo dataset as MuData (``rna``/``atac``), with ``uns['demo']`` naming it."""
    from scclip.datasets import synthetic_multiome

    demos = {d.key: d for d in list_demos()}
    if key not in demos:
        raise ScclipError(f"unknown demo dataset {key!r}; choose one of {sorted(demos)}")
    if not demos[key].available:
        raise ScclipError(f"demo {demos[key].label!r} is not available: {demos[key].reason}")
    if key.startswith("snare"):
        from scclip.io import read

        full = read(data_dir() / SNARE_FILE)
        batch = full["rna"].obs["batch"].astype(str)
        if key == "snare-test":
            keep = batch.isin(SNARE_TEST_LIBRARIES).to_numpy()
            mdata = md.MuData({m: full[m][keep].copy() for m in ("rna", "atac")})
        elif key == "snare-unpaired":
            mdata = md.MuData(
                {
                    "rna": full["rna"][(batch == "09I").to_numpy()].copy(),
                    "atac": full["atac"][(full["atac"].obs["batch"].astype(str) == "09J").to_numpy()].copy(),
                }
            )
        else:
            mdata = md.MuData({m: full[m].copy() for m in ("rna", "atac")})
    else:
        full = synthetic_multiome(synthetic_cells(model_summary), seed=0)
        if key == "synthetic":
            mdata = full
        else:
            n = full.n_obs // 2
            rna, atac = full["rna"][:n].copy(), full["atac"][n:].copy()
            mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.uns["demo"] = {"key": key, "label": demos[key].label}
    mdata.uns["genome"] = "mm10"
    return mdata


def default_choice(models: list[str] | None = None) -> tuple[str | None, str]:
    """The app's start-up (model, demo dataset).

    ``$SCCLIP_DEFAULT_MODEL`` wins; else :data:`~scclip.explore.constants.SNARE_DEMO_MODEL` (the CV fold model
    that never saw libraries 09I/09J) with those held-out SNARE-seq cells when both exist, so that the default is
    an honest zero-shot demonstration; else ``demo-synthetic`` (or the first installed model) with the synthetic
    demo.
    """
    from scclip.pretrained import list_pretrained

    models = list_pretrained() if models is None else models
    snare_ok = (data_dir() / SNARE_FILE).is_file()
    env = os.environ.get("SCCLIP_DEFAULT_MODEL")
    if env:
        return env, os.environ.get("SCCLIP_DEFAULT_DEMO", "snare-test" if snare_ok else "synthetic")
    if snare_ok and SNARE_DEMO_MODEL in models:
        return SNARE_DEMO_MODEL, "snare-test"
    if "demo-synthetic" in models:
        return "demo-synthetic", "synthetic"
    return (models[0] if models else None), "synthetic"
