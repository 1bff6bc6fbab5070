"""Release folders: a trained model as users handle it (network + feature space + preprocessing), read and
written without pickle (``config.json`` + ``model.safetensors`` + feature tables + model card).

The one construction path: :meth:`ScclipModel.create` for a new model, :func:`load_pretrained` for a saved one.
The modules:

- ``_release``: :class:`ScclipModel`, :func:`load_pretrained`, :func:`list_pretrained`, folder resolution;
- ``_card``: the model card (``README.md``) written into each folder;
- ``_convert``: a trusted training checkpoint (``.pt``) converted into a release folder.
"""

from __future__ import annotations

from scclip.pretrained._card import render_model_card
from scclip.pretrained._convert import convert_checkpoint
from scclip.pretrained._release import (
    FORMAT_VERSION,
    PICKLE_SUFFIXES,
    RELEASE_FILES,
    REPO_PRETRAINED,
    ScclipModel,
    check_state_dict,
    layouts_of,
    list_pretrained,
    load_pretrained,
    refuse_pickle,
    resolve_model_dir,
)

__all__ = [
    "FORMAT_VERSION",
    "PICKLE_SUFFIXES",
    "RELEASE_FILES",
    "REPO_PRETRAINED",
    "ScclipModel",
    "check_state_dict",
    "convert_checkpoint",
    "layouts_of",
    "list_pretrained",
    "load_pretrained",
    "refuse_pickle",
    "render_model_card",
    "resolve_model_dir",
]
