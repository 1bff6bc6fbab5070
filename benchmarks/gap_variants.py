"""Training-time variants against the modality gap: one process trains each, then scores raw and gap-closed.

For every variant (a JSON spec as in ``benchmarks/quality_variants.py``) and seed, trains on the development
split (libraries 09A-09H minus 1,000 validation cells), embeds the validation cells and the test libraries
09I + 09J, and prints one JSON line per run with, for the raw (``X_scclip_raw``) and the gap-closed
(``X_scclip``) embeddings: FOSCTTM, modality mixing (k = 30), cell-type ASW over both modalities, per-modality
ASW, label transfer RNA -> ATAC. Choices are made on validation; test is only reported::

    python benchmarks/gap_variants.py --seeds 0,1 --out out/gap_variants.jsonl \\
        base='{}' t005='{"model": {"logit_scale_init": 2.9957, "logit_scale_max": 2.9957}}'

The data is read once; on a GPU each default-preset run takes ~20 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import mudata as md
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scclip  # noqa: E402
from scclip import baselines as B  # noqa: E402
from scclip.evaluate import evaluate_embeddings  # noqa: E402
from scclip.gap import close_gap  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from quality_variants import train_spec  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


#: Output name -> key of scclip.evaluate.evaluate_embeddings.
KEYS = {
    "foscttm": "foscttm",
    "mixing": "mixing_entropy",
    "asw": "asw_cell_type",
    "asw_rna": "asw_cell_type_rna",
    "asw_atac": "asw_cell_type_atac",
    "label_transfer": "label_transfer_accuracy",
}


def scores(r: np.ndarray, a: np.ndarray, labels: np.ndarray) -> dict:
    """Matching, mixing and cell-type structure of one (RNA, ATAC) embedding pair of the same cells."""
    res = evaluate_embeddings(r, a, rna_labels=labels, atac_labels=labels)
    return {name: res[key] for name, key in KEYS.items()}


def evaluate(model, mdata, idx) -> dict:
    sub = md.MuData({m: mdata[m][idx].copy() for m in ("rna", "atac")})
    emb = scclip.embed(model, sub, close_gap=False)
    r, a = emb["rna"].obsm["X_scclip"], emb["atac"].obsm["X_scclip"]
    labels = sub["rna"].obs["cell_type"].astype(str).to_numpy()
    jr, ja, _ = close_gap(r, a)
    raw, closed = scores(r, a, labels), scores(jr, ja, labels)
    out = {f"raw_{k}": round(v, 4) for k, v in raw.items()}
    out |= {f"closed_{k}": round(v, 4) for k, v in closed.items()}
    out["asw_change"] = round(closed["asw"] - raw["asw"], 4)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", help="NAME=JSON_SPEC")
    p.add_argument("--seeds", default="0")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=None, help="append one JSON line per run here")
    a = p.parse_args(argv)
    md.set_options(pull_on_update=False)
    mdata = md.read_h5mu(a.data)
    for item in a.variants:
        name, _, spec_text = item.partition("=")
        spec = json.loads(spec_text or "{}")
        for seed in (int(s) for s in a.seeds.split(",")):
            t0 = time.time()
            with tempfile.TemporaryDirectory() as tmp:
                model = train_spec(mdata, spec, Path(tmp) / "run", seed=seed)
            row = {"name": name, "seed": seed, "spec": spec, "best_epoch": model.summary["best_epoch"]}
            split = B.snare_split(mdata, seed=seed)  # the run's own validation cells (same draw as train's)
            row["val"] = evaluate(model, mdata, split.val)
            row["test"] = evaluate(model, mdata, split.test)
            row["seconds"] = round(time.time() - t0, 1)
            line = json.dumps(row)
            print(line, flush=True)
            if a.out is not None:
                a.out.parent.mkdir(parents=True, exist_ok=True)
                with a.out.open("a") as fh:
                    fh.write(line + "\n")


if __name__ == "__main__":
    main()
