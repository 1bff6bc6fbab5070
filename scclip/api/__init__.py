"""The AnnData / MuData entry points: :func:`train` and :func:`embed`, and the input preparation they share.

The modules (no cycle between them: both entry points use ``_inputs`` and ``_chunked``):

- ``_inputs``: open what the user passed, map a modality onto a model's features, apply its preprocessing;
- ``_chunked``: the same, chunk by chunk, for files larger than memory;
- ``_train``: :func:`train` (imports the training loop only when it runs);
- ``_embed``: :func:`embed` (raw and gap-closed embeddings in ``.obsm``).
"""

from __future__ import annotations

from scclip._constants import EMBED_KEY
from scclip.api._chunked import MappedChunks, embed_modality, map_all
from scclip.api._embed import embed
from scclip.api._inputs import as_mudata, map_modality, open_input, prepare_modality, preprocess_modality
from scclip.api._train import add_feature_path, build_feature_space, split_cells, train

__all__ = [
    "EMBED_KEY",
    "MappedChunks",
    "add_feature_path",
    "as_mudata",
    "build_feature_space",
    "embed",
    "embed_modality",
    "map_all",
    "map_modality",
    "open_input",
    "prepare_modality",
    "preprocess_modality",
    "split_cells",
    "train",
]
