"""scCLIP Explorer: one embedding space for scRNA-seq and scATAC-seq.

>>> import scclip
>>> model = scclip.train(mdata, out_dir="runs/mine", holdout_key="batch", holdout=["09I", "09J"])
>>> emb = scclip.embed(model, new_mdata)     # .obsm['X_scclip'] per modality

The data path, one subpackage per step: ``io`` (files) -> ``features`` (genome-ordered features, alignment of a
query; ``genome`` underneath) -> ``preprocess`` -> ``model`` (patch tokens, Transformers, CLIP) -> ``api``
(``train`` / ``embed``; ``training`` and ``pretrained`` beside it) -> ``gap`` -> ``match`` -> ``explore`` (the
app's logic). See ``docs/architecture.md``.
"""

from __future__ import annotations

import mudata as _mudata

from scclip._constants import EMBED_KEY
from scclip._version import __version__
from scclip.api import embed, train
from scclip.errors import GenomeMismatchError, ScclipError
from scclip.features import FeatureSpace
from scclip.model import ModelConfig, get_preset
from scclip.pretrained import ScclipModel, list_pretrained, load_pretrained

_mudata.set_options(pull_on_update=False)  # the future mudata default; silences its FutureWarning

__all__ = [
    "EMBED_KEY",
    "FeatureSpace",
    "GenomeMismatchError",
    "ModelConfig",
    "ScclipError",
    "ScclipModel",
    "TrainConfig",
    "__version__",
    "embed",
    "get_preset",
    "list_pretrained",
    "load_pretrained",
    "train",
]


def __getattr__(name: str):
    """``scclip.TrainConfig`` loads the training package on first use (embedding never imports it)."""
    if name == "TrainConfig":
        from scclip.training import TrainConfig

        return TrainConfig
    msg = f"module 'scclip' has no attribute {name!r}"
    raise AttributeError(msg)
