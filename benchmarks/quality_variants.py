"""Train one scCLIP variant on the development split and print its validation and held-out figures.

Used for the tuning table in docs/quality.md. Decisions are taken on the validation FOSCTTM (1,000 random cells of
libraries 09A-09H); libraries 09I + 09J are only reported::

    python benchmarks/quality_variants.py NAME '{"fs": "own", "atac": "tfidf"}'
    python benchmarks/quality_variants.py wd02 '{"train": {"weight_decay": 0.2}}'
    python benchmarks/quality_variants.py t010 '{"model": {"logit_scale_init": 2.3026, "logit_scale_max": 2.3026}}'

Keys: ``preset`` (default ``default``), ``model`` (ModelConfig overrides), ``train`` (TrainConfig overrides on top
of 20 epochs, lr 1e-3, patience 8), ``fs`` (feature space, default ``mm10``), ``atac`` (default ``tfidf``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import mudata as md

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scclip  # noqa: E402
from scclip.model import get_preset  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def _log(event: dict) -> None:
    if event.get("event") == "epoch":
        keep = ("epoch", "loss", "val_foscttm", "val_top1")
        print(
            json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in event.items() if k in keep}
            ),
            flush=True,
        )


def train_spec(
    mdata, spec: dict, out_dir: Path, *, seed: int | None = None, progress=None, command=None, holdout=("09I", "09J")
):
    """Train one variant (keys as in the module docstring) with the libraries ``holdout`` held out (default the
    development split, 09I + 09J) and 1,000 random validation cells of the others; ``seed`` overrides the spec's."""
    mcfg = get_preset(spec.get("preset", "default"), **spec.get("model", {}))
    tcfg = {"epochs": 20, "lr": 1e-3, "patience": 8, **spec.get("train", {})}
    if seed is not None:
        tcfg["seed"] = seed
    return scclip.train(
        mdata,
        out_dir=out_dir,
        model_config=mcfg,
        train_config=tcfg,
        feature_space=spec.get("fs", "mm10"),
        atac_method=spec.get("atac", "tfidf"),
        holdout_key="batch",
        holdout=list(holdout),
        val_size=1000,
        progress=progress,
        command=command,
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit(__doc__)
    name, spec = argv[0], json.loads(argv[1])
    md.set_options(pull_on_update=False)
    mdata = md.read_h5mu(DATA)
    t0 = time.time()
    command = f"python benchmarks/quality_variants.py {name} '{argv[1]}'"
    model = train_spec(mdata, spec, REPO / "runs" / "variants" / name, progress=_log, command=command)
    s = model.summary
    out = {
        "best_epoch": s["best_epoch"],
        "val": s["validation"],
        "test": s["holdout_metrics"],
        "seconds": round(time.time() - t0),
    }
    print("RESULT", name, json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
