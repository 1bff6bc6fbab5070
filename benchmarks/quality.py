"""Quality benchmark: scCLIP models vs the baselines on the real SNARE-seq development split, one markdown table.

Train on libraries 09A-09H, test on 09I + 09J (never fitted on, never used for early stopping or selection).
scCLIP runs are trained beforehand with the CLI on the same split, e.g.::

    scclip train --data ../shared/data/chen2019_snareseq_dev.h5mu --out runs/snare-mm10 --feature-space mm10 \\
        --holdout-key batch --holdout 09I,09J --val-size 1000 --epochs 20 --lr 1e-3

and passed here; the script checks from each run's summary that 09I and 09J were held out. Each run gives two
rows: the model's own per-modality embedding (``raw``, ``obsm['X_scclip_raw']``) and the gap-closed joint one
(``obsm['X_scclip']``, cross-modal completion, see ``scclip.gap``)::

    python benchmarks/quality.py --scclip runs/snare-mm10 [--baselines-json out/baselines.json] [--json out.json]

``--baselines-json`` reuses baseline results written by ``benchmarks/baselines.py --json`` (or by an earlier run of
this script) instead of refitting them; without it the baselines are fitted here (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import baselines as BL  # noqa: E402

from scclip import baselines as B  # noqa: E402

TEST = ("09I", "09J")


def _run_model_dir(path: Path) -> Path:
    return path / "model" if (path / "model" / "config.json").exists() else path


def _check_holdout(model_dir: Path) -> dict:
    summary_path = model_dir / "summary.json"
    if not summary_path.exists():
        msg = f"{model_dir} has no summary.json: pass a folder written by `scclip train`"
        raise SystemExit(msg)
    summary = json.loads(summary_path.read_text())
    held = summary.get("holdout") or {}
    if held.get("key") != "batch" or not set(TEST) <= set(map(str, held.get("values") or [])):
        msg = f"{model_dir} was not trained with 09I and 09J held out (--holdout-key batch --holdout 09I,09J)"
        raise SystemExit(msg)
    return summary


def score_scclip(model_dir: Path, mdata, split, results: dict, *, label: str | None = None) -> None:
    """Embed the test cells with one trained run and add its raw and gap-closed rows to ``results``."""
    import mudata as md

    import scclip

    summary = _check_holdout(model_dir)
    name = label or (model_dir.parent.name if model_dir.name == "model" else model_dir.name)
    test = md.MuData({m: mdata[m][split.test].copy() for m in ("rna", "atac")})
    emb = scclip.embed(str(model_dir), test)
    labels = test["rna"].obs["cell_type"].astype(str).to_numpy()
    sizes = BL.test_sizes(len(split.test))
    seconds = float(summary.get("train_seconds", np.nan))
    for tag, key in (("raw", "X_scclip_raw"), ("gap-closed", "X_scclip")):
        r, a = emb["rna"].obsm[key], emb["atac"].obsm[key]
        row = f"scCLIP {name} ({tag})"
        results["rows"][row] = BL._scores(r, a, labels)
        results["scaling"][row] = BL._scaling(r, a, sizes)
        results["train_seconds"][row] = seconds
    print(
        f"{name}: {json.dumps(emb.uns['scclip']['gap']['gap_before'])} -> gap after completion "
        f"{json.dumps(emb.uns['scclip']['gap']['gap_after'])}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    import mudata as md

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=BL.DEFAULT_DATA)
    p.add_argument("--scclip", type=Path, nargs="*", default=[], help="run folders written by `scclip train`")
    p.add_argument("--baselines-json", type=Path, default=None)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write all results here")
    args = p.parse_args(argv)

    md.set_options(pull_on_update=False)
    mdata = md.read_h5mu(args.data)
    split = B.snare_split(mdata, test_batches=TEST)
    if args.baselines_json and args.baselines_json.exists():
        results = BL.from_json(json.loads(args.baselines_json.read_text()))
        results["rows"] = {k: v for k, v in results["rows"].items() if not k.startswith("scCLIP")}
        results["scaling"] = {k: v for k, v in results["scaling"].items() if k in results["rows"]}
        results["train_seconds"] = {k: v for k, v in results["train_seconds"].items() if k in results["rows"]}
        print(f"baselines read from {args.baselines_json}")
    else:
        results = BL.run_baselines(mdata, split, seeds=args.seeds)
        if args.baselines_json:
            args.baselines_json.parent.mkdir(parents=True, exist_ok=True)
            args.baselines_json.write_text(json.dumps(BL.to_json(results), indent=2))
    for run in args.scclip:
        score_scclip(_run_model_dir(run), mdata, split, results)
    BL.print_tables(results, len(split.test))
    if args.json:
        args.json.write_text(json.dumps(BL.to_json(results), indent=2))


if __name__ == "__main__":
    main()
