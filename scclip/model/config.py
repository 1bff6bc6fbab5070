"""Architecture configuration (a dataclass) and its named presets."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from scclip.errors import ScclipError

PATCH_EMBEDDINGS = ("per_patch", "shared")


@dataclass
class ModelConfig:
    """Architecture of both encoders.

    Parameters
    ----------
    d_model
        Token width of each Transformer.
    n_layers, n_heads, d_ff
        Pre-LN Transformer depth, attention heads and feed-forward width.
    dropout
        Dropout inside the Transformer. Off by default: with ~100 non-zero features per cell the
        input-dependent signal starts small, and dropout noise made training collapse to a constant embedding
        (loss stuck at ln N) on both the synthetic and the SNARE-seq data; ``feature_dropout`` regularises instead.
    proj_dim
        Dimension of the shared, L2-normalised embedding space.
    n_patches
        Patches (tokens) per modality; the feature space cuts the genome-sorted features into that many
        contiguous patches.
    patch_embedding
        ``"per_patch"``: every feature has its own embedding vector, summed within its patch (learns on
        very sparse data). ``"shared"``: the paper's ViT-style embedding, one ``Linear(patch_size, d_model)``
        for all patches.
    feature_dropout
        Fraction of each cell's non-zero input features dropped at random during training (augmentation and
        regularisation; off at inference).
    embedding_init
        ``"svd"``: start each feature's embedding at its loadings on the top singular vectors of the training
        matrix (PCA / LSI; see :mod:`scclip.model.init`); ``"random"``: small Gaussian.
    freeze_embedding
        Keep the SVD-initialised per-feature vectors fixed and train the rest (per-patch bias and norm,
        Transformer, projection). On SNARE-seq this lifted validation FOSCTTM from 0.133 (trained embeddings,
        overfitting after ~6 epochs) to 0.101 (12 epochs, still improving), and halves the step time.
    svd_skip
        Leading singular vectors left out of the SVD initialisation (the first one of uncentred log counts /
        TF-IDF mostly follows sequencing depth, which differs between libraries; the LSI recipe drops it).
    logit_scale_init, logit_scale_max
        Learnable temperature of the CLIP loss as ln(1/T): initial value and clamp.
    skip_empty_patches
        Drop from attention every token whose patch holds no non-zero feature of that cell: each batch's
        non-empty tokens are packed to the front (positions of their original patches kept), padded to the
        batch's largest count and masked, so the Transformer's work falls with the empty tokens (about half of
        them in the paper preset). [CLS] always stays. It changes the model (an empty patch's token no longer
        takes part in attention), so it is part of the architecture, saved in ``config.json``; configs saved
        before it existed load as ``False``.
    """

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    dropout: float = 0.0
    proj_dim: int = 64
    n_patches: int = 64
    patch_embedding: str = "per_patch"
    feature_dropout: float = 0.3
    embedding_init: str = "svd"
    freeze_embedding: bool = True
    svd_skip: int = 1
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)
    skip_empty_patches: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.patch_embedding not in PATCH_EMBEDDINGS:
            msg = f"patch_embedding must be one of {PATCH_EMBEDDINGS}, got {self.patch_embedding!r}"
            raise ScclipError(msg)
        if self.d_model % self.n_heads:
            msg = f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            raise ScclipError(msg)
        for name in ("d_model", "n_layers", "n_heads", "d_ff", "proj_dim", "n_patches"):
            if int(getattr(self, name)) < 1:
                msg = f"{name} must be a positive integer, got {getattr(self, name)!r}"
                raise ScclipError(msg)
        if self.embedding_init not in ("svd", "random"):
            msg = f"embedding_init must be 'svd' or 'random', got {self.embedding_init!r}"
            raise ScclipError(msg)
        if int(self.svd_skip) < 0:
            msg = f"svd_skip must be >= 0, got {self.svd_skip!r}"
            raise ScclipError(msg)
        if not 0.0 <= self.feature_dropout < 1.0 or not 0.0 <= self.dropout < 1.0:
            msg = "dropout and feature_dropout must lie in [0, 1)"
            raise ScclipError(msg)
        if not isinstance(self.skip_empty_patches, bool):
            msg = f"skip_empty_patches must be true or false, got {self.skip_empty_patches!r}"
            raise ScclipError(msg)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """From a saved dict (``config.json``, checkpoints); keys added later take the value that models saved
        before them ran with (``skip_empty_patches``: False), not today's default for new models."""
        d = {**SAVED_BEFORE, **d}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            msg = f"unknown model config keys {unknown}; known keys: {sorted(known)}"
            raise ScclipError(msg)
        return cls(**d)


#: Settings added after models were released, with the value every model saved before them ran with.
SAVED_BEFORE = {"skip_empty_patches": False}
#: Default of new models (presets, ``get_preset``): decided by speed and the cross-validation in
#: docs/benchmarks.md ("where we stand"); a saved model keeps the value in its config.
NEW_MODEL_DEFAULTS = {"skip_empty_patches": ModelConfig.skip_empty_patches}

PRESETS: dict[str, dict] = {
    # Sized for a laptop CPU: trains on the SNARE-seq data in minutes.
    "default": {},
    # The scCLIP paper's architecture (its ViT-style shared patch embedding).
    "paper": dict(
        d_model=256,
        n_layers=6,
        n_heads=8,
        d_ff=512,
        dropout=0.1,
        proj_dim=128,
        n_patches=128,
        patch_embedding="shared",
        feature_dropout=0.0,
    ),
    # The paper's sizes with per-patch embeddings (what learns on very sparse data).
    "paper-per-patch": dict(
        d_model=256,
        n_layers=6,
        n_heads=8,
        d_ff=512,
        dropout=0.1,
        proj_dim=128,
        n_patches=128,
        patch_embedding="per_patch",
    ),
    # For tests and demos: tiny and fast.
    "tiny": dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, proj_dim=16, n_patches=8),
}


def get_preset(name_or_json: str | dict | None = None, **overrides) -> ModelConfig:
    """A :class:`ModelConfig` from a preset name, a JSON file path, or a dict, with overrides applied."""
    if name_or_json is None:
        base: dict = {}
    elif isinstance(name_or_json, dict):
        base = dict(name_or_json)
    elif name_or_json in PRESETS:
        base = dict(PRESETS[name_or_json])
    elif str(name_or_json).endswith(".json"):
        path = Path(name_or_json)
        if not path.is_file():
            msg = (
                f"config file {path} does not exist; pass a preset name ({', '.join(PRESETS)}) or a JSON file"
            )
            raise ScclipError(msg)
        try:
            base = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            msg = f"config file {path} is not valid JSON: {err}"
            raise ScclipError(msg) from None
        base = base.get("model", base)
    else:
        msg = (
            f"unknown config {name_or_json!r}; use a preset ({', '.join(PRESETS)}) or a path to a .json file"
        )
        raise ScclipError(msg)
    base = {**NEW_MODEL_DEFAULTS, **base}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig.from_dict(base)
