"""The modality gap on real SNARE-seq cells: fixes compared on validation cells, the chosen one on 09I + 09J.

Choices are made on the 1,000 validation cells of the training libraries (the run's early-stopping cells, never
trained on); the test libraries 09I + 09J are only reported. Prints markdown tables and writes a before/after
joint-UMAP figure::

    python benchmarks/modality_gap.py --model pretrained/mouse-cortex-snareseq --figure docs/img/modality_gap_umap.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mudata as md
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scclip  # noqa: E402
from scclip import baselines as B  # noqa: E402
from scclip.evaluate import evaluate_embeddings  # noqa: E402
from scclip.gap import close_gap, modality_gap  # noqa: E402
from scclip.metrics import celltype_asw  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _whiten(x):
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt.T / (s / np.sqrt(len(x)) + 1e-3)


def variants(r: np.ndarray, a: np.ndarray) -> dict:
    """Candidate corrections of raw per-modality embeddings ``r``, ``a`` (same cells, same order)."""
    out = {
        "none (raw)": (r, a),
        "centre each modality": (_unit(r - r.mean(0)), _unit(a - a.mean(0))),
        "centre + standardise": (_unit((r - r.mean(0)) / r.std(0)), _unit((a - a.mean(0)) / a.std(0))),
        "whiten each modality": (_unit(_whiten(r)), _unit(_whiten(a))),
    }
    for k in (5, 15, 50):
        jr, ja, _ = close_gap(r, a, k=k)
        out[f"cross-modal completion k={k}"] = (jr, ja)
    return out


#: Table column -> key of scclip.evaluate.evaluate_embeddings (ASW RNA / ATAC: within one modality's cells, blind
#: to the gap between the modalities, see gap_sweep).
COLUMNS = {
    "FOSCTTM": "foscttm",
    "top-1": "top1",
    "mixing": "mixing_entropy",
    "label transfer": "label_transfer_accuracy",
    "ASW": "asw_cell_type",
    "ASW RNA": "asw_cell_type_rna",
    "ASW ATAC": "asw_cell_type_atac",
}


def score(r, a, labels) -> dict:
    res = evaluate_embeddings(r, a, rna_labels=labels, atac_labels=labels)
    return {col: res[key] for col, key in COLUMNS.items()} | {
        "mean distance": modality_gap(r, a)["mean_distance"]
    }


def gap_sweep(r, a, labels, *, scales=(-0.3, -0.15, 0.0, 0.3, 0.6, 1.0, 2.0)) -> str:
    """ASW over both modalities when the gap is artificially narrowed (< 0) or widened (> 0).

    Each modality is moved by ``+-c`` along the unit vector between the two modality means and re-normalised:
    the geometry within each modality barely changes, only the distance between them. If the ASW moves with
    ``c``, it measures the gap as well as cell-type structure.
    """
    r, a = _unit(r), _unit(a)
    g = _unit((r.mean(0) - a.mean(0))[None, :])
    lab2 = np.concatenate([labels, labels])
    asw = [celltype_asw(np.concatenate([_unit(r + c * g), _unit(a - c * g)]), lab2) for c in scales]
    return "ASW with the gap shifted by c (0 = as embedded): " + ", ".join(
        f"c={c:+.2f}: {v:.3f}" for c, v in zip(scales, asw, strict=True)
    )


def asw_change_over_halves(r, a, jr, ja, labels, *, n: int = 100, seed: int = 0) -> str:
    """ASW(gap-closed) - ASW(raw) on the whole set and over ``n`` random halves of the cells (both modalities of
    each drawn cell), to tell a real change from sampling noise."""
    lab2 = np.concatenate([labels, labels])
    raw, joint = np.concatenate([r, a]), np.concatenate([jr, ja])

    def diff(rows):
        return celltype_asw(joint[rows], lab2[rows]) - celltype_asw(raw[rows], lab2[rows])

    rng, m = np.random.default_rng(seed), len(labels)
    d = np.array(
        [diff(np.concatenate([c, c + m])) for c in (rng.choice(m, m // 2, replace=False) for _ in range(n))]
    )
    lo, hi = np.percentile(d, [2.5, 97.5])
    return (
        f"ASW(gap-closed) - ASW(raw): all cells {diff(np.arange(2 * m)):+.4f}; over {n} random halves mean "
        f"{d.mean():+.4f}, sd {d.std():.4f}, 95% range [{lo:+.4f}, {hi:+.4f}], share below zero {(d < 0).mean():.2f}"
    )


def table(title: str, rows: dict) -> None:
    cols = list(next(iter(rows.values())))
    print(f"\n{title}\n")
    print("| correction | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, sc in rows.items():
        print(f"| {name} | " + " | ".join(f"{sc[c]:.3f}" for c in cols) + " |")


def figure(path: Path, r, a, jr, ja, labels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import umap

    fig, axes = plt.subplots(2, 2, figsize=(11, 10))
    cats = sorted(set(labels))
    cmap = plt.get_cmap("tab20")
    for row, (title, x, y) in enumerate((("raw (X_scclip_raw)", r, a), ("gap-closed (X_scclip)", jr, ja))):
        xy = umap.UMAP(n_neighbors=30, min_dist=0.3, metric="cosine", random_state=0).fit_transform(
            np.vstack([x, y])
        )
        n = len(x)
        ax = axes[row, 0]
        ax.scatter(xy[:n, 0], xy[:n, 1], s=3, c="#1f77b4", label="RNA", alpha=0.6)
        ax.scatter(xy[n:, 0], xy[n:, 1], s=3, c="#ff7f0e", label="ATAC", alpha=0.6)
        ax.set_title(f"{title}: modality")
        ax.legend(markerscale=4)
        ax = axes[row, 1]
        lab2 = np.concatenate([labels, labels])
        for i, c in enumerate(cats):
            m = lab2 == c
            ax.scatter(xy[m, 0], xy[m, 1], s=3, color=cmap(i % 20), label=c, alpha=0.7)
        ax.set_title(f"{title}: cell type")
        ax.legend(markerscale=4, fontsize=7, ncol=2)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("SNARE-seq test libraries 09I + 09J (1,717 cells x 2 modalities), joint UMAP")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"\nfigure: {path}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--figure", type=Path, default=None)
    args = p.parse_args(argv)
    md.set_options(pull_on_update=False)
    mdata = md.read_h5mu(args.data)
    split = B.snare_split(mdata)
    model = scclip.load_pretrained(args.model)
    for name, idx in (
        ("validation cells of the training libraries (choice made here)", split.val),
        ("test libraries 09I + 09J (report only)", split.test),
    ):
        sub = md.MuData({m: mdata[m][idx].copy() for m in ("rna", "atac")})
        emb = scclip.embed(model, sub, close_gap=False)
        r, a = emb["rna"].obsm["X_scclip"], emb["atac"].obsm["X_scclip"]
        labels = sub["rna"].obs["cell_type"].astype(str).to_numpy()
        rows = {k: score(x, y, labels) for k, (x, y) in variants(r, a).items()}
        table(f"{name}, {len(idx)} cells", rows)
        jr, ja, _ = close_gap(r, a)
        print("\n" + asw_change_over_halves(r, a, jr, ja, labels))
        print("\n" + gap_sweep(r, a, labels))
        if args.figure is not None and idx is split.test:
            figure(args.figure, r, a, jr, ja, labels)


if __name__ == "__main__":
    main()
