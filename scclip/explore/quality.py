"""The Explore page's embedding-quality panel: the metrics it shows with their labels and help texts, and the
metrics of a joint view, computed once per cell-type column."""

from __future__ import annotations

from scclip.explore.joint import Joint

#: (metric key, label, help text, lower is better) of the tiles in the quality panel, left to right.
METRIC_PANEL = [
    ("mixing_entropy", "Modality mixing", "Entropy of RNA/ATAC among each cell's 30 neighbours (log2): 1 = perfectly mixed, 0 = separate.", False),
    ("asw_cell_type", "Cell-type ASW", "Silhouette of cell types over both modalities in the joint space, rescaled to 0..1 (higher = types better separated). A gap between the modalities also moves it; scclip evaluate also reports it within each modality (asw_cell_type_rna / _atac).", False),
    ("label_transfer_accuracy", "Label transfer acc.", "RNA -> ATAC kNN label transfer accuracy (k = 15).", False),
    ("foscttm", "FOSCTTM", "Fraction of cells closer than the true partner (paired data); 0 is perfect, 0.5 is random.", True),
    ("top1", "Top-1 match", "Fraction of cells whose nearest cross-modal cell is their true partner.", False),
    ("match_probability", "Match probability", "Mean softmax probability (T = 0.05) assigned to the true partner.", False),
]  # fmt: skip


def embedding_metrics(joint: Joint, label: str | None, *, temperature: float) -> dict:
    """:func:`scclip.evaluate.evaluate` of ``joint.info["embedded"]`` with cell types from obs column ``label``
    (``None``: none), cached in ``joint.info["metrics"]``.

    Parameters
    ----------
    joint
        The joint view; ``joint.info["embedded"]`` is the embedded MuData.
    label
        Cell-type column for ASW and label transfer, or ``None``.
    temperature
        The model's softmax temperature (for the match probability).

    Returns
    -------
    The metrics dict (``reasons`` names why a metric was not computed).
    """
    cache = joint.info.setdefault("metrics", {})
    if label not in cache:
        from scclip.evaluate import evaluate

        # the panel shows the joint embedding only: the uncorrected one is not scored
        cache[label] = evaluate(joint.info["embedded"], label_key=label, temperature=temperature, raw=False)
    return cache[label]
