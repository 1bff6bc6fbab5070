"""A trained model as users handle it: network + feature space + preprocessing, saved as a release folder.

Release folder (exactly)::

    config.json            architecture, feature-space description, genome, preprocessing
    model.safetensors      weights (and the ATAC idf vector when TF-IDF is used)
    features_rna.tsv.gz    ordered features with coordinates and patch layout (bins: spec in config.json)
    features_atac.tsv.gz
    summary.json           data, command, epochs, time, device, metrics
    README.md              model card
    centroids.json         optional: per-label centroids in the embedding space

``load_pretrained(name_or_dir)`` resolves a bare name in ``$SCCLIP_PRETRAINED_DIR``, then in the repository's
``pretrained/`` folder; a training run folder (``RUN_DIR``) is accepted too and means ``RUN_DIR/model``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scclip._version import __version__
from scclip.errors import ScclipError
from scclip.features import FeatureSpace
from scclip.io import write_json_atomic
from scclip.model import ModelConfig, ScCLIP
from scclip.model.encode import encode_csr
from scclip.model.fusion import FeaturePath, fuse

FORMAT_VERSION = 1
REPO_PRETRAINED = Path(__file__).resolve().parents[2] / "pretrained"
RELEASE_FILES = ("config.json", "model.safetensors")
#: The feature path's tensors (projections + MLP), present when ``config.json`` has ``feature_path``.
FEATURE_PATH_FILE = "fusion.safetensors"


def layouts_of(feature_space: FeatureSpace) -> dict[str, dict]:
    """Patch layouts per modality, as :class:`~scclip.model.ScCLIP` wants them."""
    return {
        m: {"patch": f.patch, "offset": f.offset, "n_patches": f.n_patches, "patch_size": f.patch_size}
        for m in feature_space.modalities
        for f in [feature_space[m]]
    }


class ScclipModel:
    """Network, feature space and preprocessing of one trained scCLIP model.

    Parameters
    ----------
    net
        The two-tower network.
    feature_space
        Features (and genome) the network reads, in model order.
    preprocessing
        ``{"rna": {"method": "log1p", "target_sum": 1e4}, "atac": {"method": "binary"|"tfidf"}}``.
    idf
        Per-feature inverse document frequency of the ATAC features (TF-IDF only).
    summary
        Training summary (``summary.json``).
    """

    def __init__(
        self,
        net: ScCLIP,
        feature_space: FeatureSpace,
        *,
        preprocessing: dict,
        idf=None,
        summary: dict | None = None,
        name: str | None = None,
        centroids: dict | None = None,
        feature_path: FeaturePath | None = None,
    ) -> None:
        self.net, self.feature_space, self.preprocessing = net, feature_space, preprocessing
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        self.summary, self.name, self.centroids = summary or {}, name, centroids
        self.feature_path = feature_path

    @property
    def embed_dim(self) -> int:
        """Width of the raw embedding: the projection, plus the feature path's when the model has one."""
        return self.net.cfg.proj_dim + (self.feature_path.dim if self.feature_path is not None else 0)

    def encode(self, modality: str, X, *, counts=None, batch_size: int = 1024, device=None) -> np.ndarray:
        """Raw embeddings of preprocessed CSR rows on the model's features: the Transformer's, fused with the
        feature path's (:func:`scclip.model.fusion.fuse`) when the model has one (its ATAC input is ``counts``,
        the rows before preprocessing)."""
        z = encode_csr(self.net, modality, X, batch_size=batch_size, device=device)
        if self.feature_path is None:
            return z
        if modality == "atac" and counts is None:
            msg = "this model's feature path reads ATAC counts: pass counts= (the rows before preprocessing)"
            raise ScclipError(msg)
        return fuse(z, self.feature_path.encode(modality, counts if modality == "atac" else X))

    @classmethod
    def create(
        cls, feature_space: FeatureSpace, config: ModelConfig, *, preprocessing: dict, idf=None
    ) -> ScclipModel:
        """A freshly initialised model over ``feature_space``."""
        missing = [m for m in ("rna", "atac") if m not in feature_space.modalities]
        if missing:
            msg = f"the feature space lacks {missing}; a paired model needs both rna and atac features"
            raise ScclipError(msg)
        return cls(
            ScCLIP(config, layouts_of(feature_space)), feature_space, preprocessing=preprocessing, idf=idf
        )

    @property
    def config(self) -> ModelConfig:
        return self.net.cfg

    @property
    def temperature(self) -> float:
        return float(1.0 / self.net.scale().detach())

    def config_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "scclip_version": __version__,
            "model": self.config.to_dict(),
            "feature_space": self.feature_space.to_dict(),
            "genome": self.feature_space.genome,
            "preprocessing": self.preprocessing,
            "temperature": self.temperature,
            **({"feature_path": self.feature_path.config} if self.feature_path is not None else {}),
        }

    def save_pretrained(self, directory: str | Path, *, card: str | None = None) -> Path:
        """Write the release folder (see module docstring); files are replaced atomically."""
        from scclip.pretrained._card import card_name, render_model_card

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.feature_space.save(directory)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        if self.idf is not None:
            tensors["preprocess.atac.idf"] = torch.from_numpy(self.idf)
        tmp = directory / ".model.safetensors.tmp"
        save_file(tensors, str(tmp), metadata={"format": "scclip", "format_version": str(FORMAT_VERSION)})
        os.replace(tmp, directory / "model.safetensors")
        if self.feature_path is not None:
            save_file(self.feature_path.tensors(), str(tmp))
            os.replace(tmp, directory / FEATURE_PATH_FILE)
        else:
            (directory / FEATURE_PATH_FILE).unlink(missing_ok=True)
        write_json_atomic(directory / "config.json", self.config_dict())
        write_json_atomic(directory / "summary.json", self.summary)
        if self.centroids:
            write_json_atomic(directory / "centroids.json", self.centroids)
        name, load_ref = card_name(directory)
        (directory / "README.md").write_text(card or render_model_card(self, name=name, load_ref=load_ref))
        return directory


PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".joblib")


def refuse_pickle(path: Path) -> None:
    """Raise :class:`ScclipError` for a pickle-based file given as a model (loading one can run code)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        msg = (
            f"{path} is a pickle-based file ({path.suffix}), which scclip never loads as a model: unpickling "
            "can run arbitrary code. If you trust it, convert it with `scclip convert-checkpoint "
            f"{path} --out DIR --like MODEL` and load DIR"
        )
        raise ScclipError(msg)


def resolve_model_dir(name_or_dir: str | Path) -> Path:
    """A release folder from a path, a run folder, or a bare name in $SCCLIP_PRETRAINED_DIR / ``pretrained/``.

    Only release folders are accepted: a pickle (``.pt``, ``.ckpt``, ``.pkl``, ``.bin``, ...) is refused.
    """
    path = Path(name_or_dir).expanduser()
    refuse_pickle(path)
    candidates = [path, path / "model"]
    if not path.is_absolute() and len(path.parts) == 1:
        env = os.environ.get("SCCLIP_PRETRAINED_DIR")
        if env:
            candidates.append(Path(env) / path)
        candidates.append(REPO_PRETRAINED / path)
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    if path.is_dir() and not (path / "model.safetensors").is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            msg = (
                f"{path} holds no release folder, only pickle files ({', '.join(pickles[:3])}), which scclip "
                "never loads: if you trust them, convert one with `scclip convert-checkpoint FILE --out DIR "
                "--like MODEL`"
            )
            raise ScclipError(msg)
    known = ", ".join(list_pretrained()) or "none found"
    msg = (
        f"no scCLIP model at {name_or_dir!r}: expected a folder with config.json and model.safetensors "
        f"(or a run folder with model/ inside), or the name of a pretrained model ({known})"
    )
    raise ScclipError(msg)


def list_pretrained() -> list[str]:
    """Names of the release folders in $SCCLIP_PRETRAINED_DIR and the repository's ``pretrained/``."""
    roots = [Path(p) for p in [os.environ.get("SCCLIP_PRETRAINED_DIR")] if p] + [REPO_PRETRAINED]
    names: list[str] = []
    for root in roots:
        if root.is_dir():
            names += sorted(
                p.name for p in root.iterdir() if (p / "config.json").is_file() and p.name not in names
            )
    return names


def _names(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def check_state_dict(net: torch.nn.Module, state: dict, *, where: str) -> None:
    """Raise :class:`ScclipError` listing the missing, unexpected and wrongly shaped tensors of ``state``."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} (config.json wants {expected[k]})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    problems = [
        f"missing tensors: {_names(missing)}" if missing else "",
        f"unexpected tensors: {_names(unexpected)}" if unexpected else "",
        f"shapes that do not match config.json: {_names(shapes, 4)}" if shapes else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        msg = (
            f"the weights in {where} do not fit the model's config.json: {'; '.join(problems)}. The folder is "
            "inconsistent: re-download or re-save the model (config.json and model.safetensors belong together)"
        )
        raise ScclipError(msg)


def load_pretrained(name_or_dir: str | Path, *, device: str | torch.device = "cpu") -> ScclipModel:
    """Load a release folder written by :meth:`ScclipModel.save_pretrained` (no pickle is ever read)."""
    directory = resolve_model_dir(name_or_dir)
    for f in RELEASE_FILES:
        if not (directory / f).is_file():
            msg = f"model folder {directory} is incomplete: {f} is missing; re-download or re-save the model"
            raise ScclipError(msg)
    try:
        cfg = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as err:
        msg = f"{directory / 'config.json'} is not valid JSON ({err}); the model folder is damaged"
        raise ScclipError(msg) from None
    if not isinstance(cfg, dict) or cfg.get("format_version", 0) > FORMAT_VERSION or "model" not in cfg:
        msg = (
            f"{directory / 'config.json'} is not an scCLIP model config this version ({__version__}) "
            "can read; upgrade scclip or check the folder"
        )
        raise ScclipError(msg)
    feature_space = FeatureSpace.load(directory, cfg["feature_space"])
    # Folders written before ``svd_skip`` existed were initialised without skipping (it only acts at init).
    net = ScCLIP(ModelConfig.from_dict({"svd_skip": 0, **cfg["model"]}), layouts_of(feature_space))
    try:
        tensors = load_file(str(directory / "model.safetensors"))
    except (SafetensorError, OSError) as err:
        msg = f"{directory / 'model.safetensors'} is not a readable safetensors file ({err}); re-download the model"
        raise ScclipError(msg) from None
    idf = tensors.pop("preprocess.atac.idf", None)
    state = {k: v.float() for k, v in tensors.items()}  # weights may be stored in 16 bit
    check_state_dict(net, state, where=str(directory / "model.safetensors"))
    net.load_state_dict(state)
    net.eval().to(device)
    feature_path = None
    if cfg.get("feature_path"):
        try:
            feature_path = FeaturePath.from_tensors(load_file(str(directory / FEATURE_PATH_FILE)), cfg["feature_path"])
        except (SafetensorError, OSError, KeyError, RuntimeError) as err:
            msg = f"{directory / FEATURE_PATH_FILE} is missing or damaged ({err}); re-download or re-save the model"
            raise ScclipError(msg) from None
    summary_path, centroid_path = directory / "summary.json", directory / "centroids.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    centroids = json.loads(centroid_path.read_text()) if centroid_path.is_file() else None
    return ScclipModel(
        net,
        feature_space,
        preprocessing=cfg.get("preprocessing", {}),
        idf=None if idf is None else idf.numpy(),
        summary=summary,
        name=directory.name,
        centroids=centroids,
        feature_path=feature_path,
    )
