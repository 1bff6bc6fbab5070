"""scCLIP Explorer: one embedding space for scRNA-seq and scATAC-seq.

>>> import scclip
>>> model = scclip.train(mdata, out_dir="runs/mine", holdout_key="batch", holdout=["09I", "09J"])
>>> emb = scclip.embed(model, new_mdata)     # .obsm['X_scclip'] per modality
"""

from __future__ import annotations

import mudata as _mudata

__version__ = "0.1.0"

_mudata.set_options(pull_on_update=False)  # the future mudata default; silences its FutureWarning

from scclip.api import EMBED_KEY, embed, train  # noqa: E402
from scclip.errors import GenomeMismatchError, ScclipError  # noqa: E402
from scclip.features import FeatureSpace  # noqa: E402
from scclip.model import ModelConfig, get_preset  # noqa: E402
from scclip.pretrained import ScclipModel, list_pretrained, load_pretrained  # noqa: E402
from scclip.training import TrainConfig  # noqa: E402

__all__ = [
    "EMBED_KEY",
    "FeatureSpace",
    "GenomeMismatchError",
    "ModelConfig",
    "ScclipError",
    "ScclipModel",
    "TrainConfig",
    "embed",
    "get_preset",
    "list_pretrained",
    "load_pretrained",
    "train",
]
