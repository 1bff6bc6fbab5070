"""SHA-256 of the shipped model's embeddings of the real test libraries 09I + 09J (raw and gap-closed, in memory
and chunked from disk): run it on two commits to check that a refactoring left the numbers bit for bit equal.

    python scripts/embedding_fingerprint.py [--model mouse-cortex-snareseq] [--data ../shared/data/chen2019_snareseq_dev.h5mu]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import mudata as md
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scclip  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mouse-cortex-snareseq")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu")
    a = p.parse_args()
    md.set_options(pull_on_update=False)
    mdata = md.read_h5mu(a.data)
    test = mdata["rna"].obs["batch"].astype(str).isin(["09I", "09J"]).to_numpy()
    query = mdata[test].copy()
    model = scclip.load_pretrained(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test.h5mu"
        query.write(path)
        runs = {"in memory": scclip.embed(model, query), "chunked": scclip.embed(model, str(path), chunk_size=500)}
        for how, emb in runs.items():
            for m in ("rna", "atac"):
                for key in ("X_scclip_raw", "X_scclip"):
                    x = np.ascontiguousarray(emb[m].obsm[key])
                    digest = hashlib.sha256(x.tobytes()).hexdigest()[:16]
                    print(f"{how:9s} {m:4s} {key:12s} {x.shape} {x.dtype} sha256 {digest}")


if __name__ == "__main__":
    main()
