"""Does a speed-up keep quality? A trained model's held-out metrics in fp32 vs CPU bf16 autocast.

    python benchmarks/precision_quality.py [--model runs/snare/model] [--holdout 09I,09J] [--key batch]
        [--data ../shared/data/chen2019_snareseq_dev.h5mu]

Embeds the held-out libraries' RNA and ATAC with the model twice (fp32; bf16 autocast) and prints FOSCTTM,
top-1 and the largest cosine distance between a cell's fp32 and bf16 embeddings. With the model's recorded
``summary.json`` hold-out FOSCTTM, the fp32 row also checks that the current code (embedding_bag tokens,
[CLS]-only last block) reproduces what the model scored when it was trained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/snare/model")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--key", default="batch")
    p.add_argument("--holdout", default="09I,09J")
    a = p.parse_args()
    from scclip.api import prepare_modality
    from scclip.io import paired_cells, read
    from scclip.metrics import foscttm, topk_accuracy
    from scclip.model import encode_csr
    from scclip.pretrained import load_pretrained

    model = load_pretrained(a.model)
    mdata = paired_cells(read(a.data))
    held = np.flatnonzero(mdata["rna"].obs[a.key].astype(str).isin(a.holdout.split(",")).to_numpy())
    X = {m: prepare_modality(model, mdata[m][held], m)[0] for m in ("rna", "atac")}
    out = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        t = time.perf_counter()
        z = {m: encode_csr(model.net, m, X[m], bf16=bf16) for m in X}
        out[name] = (z, time.perf_counter() - t)
    recorded = (model.summary or {}).get("holdout_metrics", {}).get("foscttm")
    print(
        f"model {a.model}; {len(held)} held-out cells ({a.holdout}); recorded hold-out FOSCTTM {recorded}\n"
    )
    print("| precision | FOSCTTM | top-1 | max cosine distance to fp32 | embed seconds |")
    print("|---|---|---|---|---|")
    for name, (z, sec) in out.items():
        dist = max(float((1 - (z[m] * out["fp32"][0][m]).sum(1)).max()) for m in z)
        fos = float(foscttm(z["rna"], z["atac"])["mean"])
        top1 = float(topk_accuracy(z["rna"], z["atac"], k=1)["mean"])
        print(f"| {name} | {fos:.4f} | {top1:.4f} | {dist:.1e} | {sec:.1f} |")
    print(json.dumps({"recorded_holdout_foscttm": recorded}))


if __name__ == "__main__":
    main()
