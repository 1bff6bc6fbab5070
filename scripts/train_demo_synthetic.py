"""Train and release ``pretrained/demo-synthetic``: a tiny model on the seeded multiome simulator (offline demo).

    python scripts/train_demo_synthetic.py [--out-root pretrained]

Trains on ``synthetic_multiome(3000, seed=0)`` with the ``tiny`` preset on the mm10 reference feature space (gene
table + 5 kb bins that the simulated peaks touch), so any simulated dataset (other seeds) maps onto it by name
and overlap, then stores per-cell-type centroids and a model card.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import scclip  # noqa: E402
from scclip.datasets import synthetic_multiome  # noqa: E402
from scclip.pretrained import render_model_card  # noqa: E402

NOTES = """## Intended use and limits (demo model)
Trained on *simulated* cells (`scclip.datasets.synthetic_multiome(3000, seed=0)`: 5 cell types, genes at real mm10
coordinates, peaks near genes whose accessibility tracks expression). It exists so the app and the tests have a
small, fully offline model; it knows nothing about real biology. Use `mouse-cortex-snareseq` for real data.
"""


def main(argv: list[str] | None = None) -> None:
    from release_pretrained import cell_type_centroids

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-root", type=Path, default=REPO / "pretrained")
    p.add_argument("--epochs", type=int, default=25)
    args = p.parse_args(argv)

    data = synthetic_multiome(3000, seed=0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = scclip.train(
            data,
            out_dir=Path(tmp) / "run",
            model_config="tiny",
            train_config={"epochs": args.epochs, "batch_size": 128, "lr": 2e-3, "patience": 6},
            feature_space="mm10",
            genome="mm10",
            val_size=300,
            command="python scripts/train_demo_synthetic.py",
            data_name="scclip.datasets.synthetic_multiome(3000, seed=0)",
        )
    model.name = "demo-synthetic"
    model.summary = dict(model.summary)
    model.summary["intended_use"] = "offline demo and tests only (simulated data)"
    model.centroids = cell_type_centroids(model, data, label_key="cell_type")
    card = render_model_card(model, name="demo-synthetic", notes=NOTES)
    out = model.save_pretrained(args.out_root / "demo-synthetic", card=card)
    val = model.summary.get("validation", {})
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s; validation {val}")


if __name__ == "__main__":
    main()
