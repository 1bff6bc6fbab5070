"""Within-modality structure distillation: keep each modality's cell-to-cell similarities close to its PCA / LSI.

The CLIP loss only asks that a cell's RNA embedding be nearer its own ATAC profile than the other cells' ATAC
profiles. Nothing asks that cells of one type stay together within a modality, and on SNARE-seq the CLIP
embedding separates cell types less well than a plain RNA PCA (cell-type ASW 0.49 vs 0.53 on the test
libraries, docs/modality_gap.md). With the SVD-initialised, frozen per-feature embedding
(:mod:`scclip.model.init`), a cell's sum of ``value x feature vector`` is its projection on the top singular
vectors of the training matrix (PCA of log counts for RNA, LSI of TF-IDF for ATAC) and costs one
``embedding_bag``. The term below is a KL divergence between the softmax of those projections' cosine
similarities within the batch (the teacher, no gradient) and the softmax of the embeddings' similarities
(the student), each cell's self-similarity left out::

    L_struct = mean_i KL( softmax_j(cos(t_i, t_j) / tau) || softmax_j(cos(z_i, z_j) / tau) ),  j != i

averaged over the two modalities and added to the CLIP loss with weight ``TrainConfig.structure_weight``.
Under DDP each rank uses its local cells (the term is per modality and needs no pairing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scclip.errors import ScclipError
from scclip.model.config import ModelConfig
from scclip.model.patch import PatchEmbedding, SparseBatch

#: ``TrainConfig.structure_weight = None`` resolves to this for models with the SVD-initialised embedding.
DEFAULT_STRUCTURE_WEIGHT = 1.0


def resolve_structure_weight(weight: float | None, cfg: ModelConfig) -> float:
    """``weight``, or for ``None`` 1.0 when the model has the frozen SVD-initialised per-feature embedding, else 0."""
    svd = (cfg.embedding_init, cfg.patch_embedding, cfg.freeze_embedding) == ("svd", "per_patch", True)
    if weight is None:
        return DEFAULT_STRUCTURE_WEIGHT if svd else 0.0
    if weight > 0 and not svd:
        msg = (
            "structure_weight needs the frozen SVD-initialised per-feature embedding (embedding_init='svd', "
            "patch_embedding='per_patch', freeze_embedding=True: its teacher is the cells' PCA / LSI "
            f"coordinates), got embedding_init={cfg.embedding_init!r}, patch_embedding={cfg.patch_embedding!r}, "
            f"freeze_embedding={cfg.freeze_embedding!r}; set structure_weight=0 or use that embedding"
        )
        raise ScclipError(msg)
    return float(weight)


@torch.no_grad()
def teacher_vectors(embed: PatchEmbedding, batch: SparseBatch) -> torch.Tensor:
    """(B, d_model) unit-norm ``sum_f x_f * embed.weight[f]`` per cell: its PCA / LSI coordinates (SVD init)."""
    index = batch.cols if embed.mode == "per_patch" else embed.weight_index[batch.cols]
    offsets = torch.searchsorted(batch.rows, torch.arange(batch.n_cells, device=batch.rows.device))
    w = embed.weight.detach().float()
    t = F.embedding_bag(index, w, offsets, mode="sum", per_sample_weights=batch.values.float())  # (B, d)
    return F.normalize(t, dim=-1)


def structure_loss(z: torch.Tensor, teacher: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the within-batch similarity distributions (module docstring).

    Parameters
    ----------
    z
        (B, proj_dim) unit-norm embeddings of one modality (the student).
    teacher
        (B, d) unit-norm teacher vectors of the same cells.
    temperature
        Softmax temperature of both similarity matrices.
    """
    n = z.shape[0]
    if n < 3:
        return z.new_zeros(())
    own = torch.eye(n, dtype=torch.bool, device=z.device)
    log_t = (teacher @ teacher.T / temperature).masked_fill(own, -1e4).log_softmax(dim=1)  # (B, B)
    log_s = (z.float() @ z.float().T / temperature).masked_fill(own, -1e4).log_softmax(dim=1)  # (B, B)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()


def structure_term(model, parts: dict, *, temperature: float) -> torch.Tensor:
    """Mean over modalities of :func:`structure_loss`; ``parts[m] = (batch, z)`` for ``model.encoders[m]``."""
    terms = [
        structure_loss(z, teacher_vectors(model.encoders[m].embed, batch), temperature=temperature)
        for m, (batch, z) in parts.items()
    ]
    return sum(terms) / len(terms)
