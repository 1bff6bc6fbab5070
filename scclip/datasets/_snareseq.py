"""The SNARE-seq adult mouse cortex data (Chen, Lake & Zhang 2019) as :class:`mudata.MuData`.

:func:`chen2019_snareseq` finds the data in a local data directory, converts the upstream files when that is
all it finds, and downloads them only when asked to (``download=True``). Upstream: the scMoMaT repository
(github.com/PeterZZQ/scMoMaT, MIT license), folder ``data/real/MOp_5batches/``, which redistributes the
SNARE-seq cells of GEO GSE126074: ``GxC1.npz`` (genes x cells counts), ``RxC1.npz`` (regions x cells counts),
``genes.txt``, ``regions.txt`` (``chr1_4914570_4914685``, mm10) and ``meta_c1.csv`` (``Batch``, ``Ident``,
``cluster (remapped)``). The conversion of those files lives in ``_snareseq_raw``.

The result has the layout of ``chen2019_snareseq_dev.h5mu`` (the development copy in ``../shared/data``):
modalities ``rna`` (float32 CSR raw counts, gene symbols as var_names) and ``atac`` (float32 CSR raw counts,
var_names ``chr1:4914570-4914685``, var columns chrom/start/end), obs ``cell_type`` (15 coarse types),
``cell_type_fine`` (23 types) and ``batch`` (sequencing library, ``09A``..), obs_names ``09A_CAGCCCCGCCTT``,
and ``uns['genome'] = 'mm10'`` on the MuData and on both modalities.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import scipy.sparse as sp

from scclip.datasets._snareseq_raw import (
    convert_raw,
)
from scclip.errors import ScclipError

logger = logging.getLogger(__name__)

#: Environment variable naming the local data directory (used when ``data_dir`` is not given).
DATA_DIR_ENV = "SCCLIP_DATA_DIR"
#: Where the upstream files are downloaded from (``download=True``); every file name is appended to it.
SNARESEQ_BASE_URL = "https://raw.githubusercontent.com/PeterZZQ/scMoMaT/main/data/real/MOp_5batches/"
#: The upstream files and their sha256; a download that does not match is deleted.
SNARESEQ_FILES = {
    "GxC1.npz": "44e48e6243954feafe0541f33b6b116093ca1ed4a25fc2f3ca146d89d1ab1bab",
    "RxC1.npz": "59d6f46dc4e908194bfc859b7773bc666d96ab74d9386b0a8f92d6b29dfcacf7",
    "genes.txt": "9d722d1d281f5ff152dc8a1fb257fec883b8aa28ea3f4f79783d0595dd8b4833",
    "regions.txt": "d77319b1ad8a51af2c97ffa5d23d5458e95356b1926e9ae4e0ab821cc7e492a3",
    "meta_c1.csv": "05ea13be8042f66ee51516ccf9fd28ca43972498a69748a9e89b5b1ca280b037",
}
#: Converted files looked for in the data directory, in this order (the first is where conversions are cached).
CONVERTED_FILES = ("chen2019_snareseq.h5mu", "chen2019_snareseq_dev.h5mu")
#: Sub-folder of the data directory that ``download=True`` fills with the upstream files.
RAW_SUBDIR = "chen2019_snareseq"
GENOME = "mm10"
OBS_COLUMNS = ("cell_type", "cell_type_fine", "batch")
_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_HOWTO_DOWNLOAD = (
    "download them (from github.com/PeterZZQ/scMoMaT, MIT license) with "
    "scclip.datasets.chen2019_snareseq(download=True), e.g. "
    'python -c "from scclip.datasets import chen2019_snareseq; chen2019_snareseq(download=True)"'
)


# --------------------------------------------------------------------------------------------- locations
def default_data_dir() -> Path:
    """The default data directory, ``~/.cache/scclip/datasets``."""
    return Path.home() / ".cache" / "scclip" / "datasets"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The data directory and where it came from: ``data_dir``, else ``$SCCLIP_DATA_DIR``, else the default.

    Returns
    -------
    (path, source), source being ``"data_dir argument"``, ``"$SCCLIP_DATA_DIR"`` or ``"default cache dir"``.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "data_dir argument"
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser(), f"${DATA_DIR_ENV}"
    return default_data_dir(), "default cache dir"


def _raw_dirs(root: Path) -> list[Path]:
    return [root, root / RAW_SUBDIR]


def _find_raw(root: Path) -> Path | None:
    for folder in _raw_dirs(root):
        if all((folder / name).is_file() for name in SNARESEQ_FILES):
            return folder
    return None


def _not_found(root: Path, source: str) -> ScclipError:
    partial = []
    for folder in _raw_dirs(root):
        have = [n for n in SNARESEQ_FILES if (folder / n).is_file()]
        if have:
            missing = [n for n in SNARESEQ_FILES if n not in have]
            partial.append(f"{folder} has {', '.join(have)} but lacks {', '.join(missing)}")
    found = f" ({'; '.join(partial)})" if partial else ""
    msg = (
        f"SNARE-seq data (Chen et al. 2019) not found: looked in {root} ({source}) for "
        f"{' or '.join(CONVERTED_FILES)}, and there and in {root / RAW_SUBDIR} for the upstream files "
        f"{', '.join(SNARESEQ_FILES)}{found}. Pass data_dir=FOLDER (or a .h5mu file), or set ${DATA_DIR_ENV} "
        f"to a folder holding them, or {_HOWTO_DOWNLOAD}."
    )
    return ScclipError(msg)


# --------------------------------------------------------------------------------------------- download
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _download_file(url: str, dest: Path, sha256: str) -> None:
    """Fetch ``url`` into a temporary file beside ``dest``, check its sha256, then rename it to ``dest``.

    Nothing is left behind on failure: the temporary file is removed whatever happens.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    done = False
    h = hashlib.sha256()
    head = b""
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
                while chunk := resp.read(_CHUNK):
                    if len(head) < 64:
                        head += chunk[:64]
                    h.update(chunk)
                    out.write(chunk)
        except (OSError, http.client.HTTPException, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            msg = (
                f"Could not download {url} ({type(err).__name__}: {reason}); no partial file was kept. "
                f"Check the network connection and run again (files already downloaded and verified are kept), "
                f"or copy the upstream files {', '.join(SNARESEQ_FILES)} by hand into {dest.parent}."
            )
            raise ScclipError(msg) from err
        digest = h.hexdigest()
        if digest != sha256:
            lfs = (
                " The server sent a Git LFS pointer instead of the file."
                if head.startswith(b"version https://git-lfs")
                else ""
            )
            msg = (
                f"Downloaded {url} but its sha256 is {digest}, not the expected {sha256}; the file was deleted.{lfs} "
                "The upstream file may have changed or the download was corrupted: try again, or fetch the files "
                f"by hand into {dest.parent} (local files are used without this check)."
            )
            raise ScclipError(msg)
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)


def _download(folder: Path) -> Path:
    """Download the upstream files missing from ``folder`` (or failing their sha256) and return ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = f"Could not create the download folder {folder} ({err}): pass a writable data_dir= or ${DATA_DIR_ENV}."
        raise ScclipError(msg) from err
    for name, sha in SNARESEQ_FILES.items():
        dest = folder / name
        if dest.is_file() and _sha256(dest) == sha:
            continue
        url = SNARESEQ_BASE_URL.rstrip("/") + "/" + name
        logger.info("downloading %s -> %s", url, dest)
        _download_file(url, dest, sha)
    return folder


# --------------------------------------------------------------------------------------------- h5mu
def _read_converted(path: Path) -> tuple[ad.AnnData, ad.AnnData]:
    try:
        with warnings.catch_warnings(), md.set_options(pull_on_update=False):
            warnings.simplefilter("ignore")
            mdata = md.read_h5mu(path)
    except (OSError, ValueError, KeyError) as err:
        msg = f"Could not read {path} ({err}); delete it and load again (a converted copy is rebuilt)."
        raise ScclipError(msg) from err
    if not all(m in mdata.mod for m in ("rna", "atac")):
        msg = (
            f"{path} lacks modality 'rna' or 'atac' (has {list(mdata.mod)}): it is not the SNARE-seq layout."
        )
        raise ScclipError(msg)
    mods = []
    for key in ("rna", "atac"):
        adata = mdata[key].copy()
        for col in OBS_COLUMNS:
            if col not in adata.obs.columns and col in mdata.obs.columns:
                adata.obs[col] = mdata.obs[col].reindex(adata.obs_names).to_numpy()
        missing = [c for c in OBS_COLUMNS if c not in adata.obs.columns]
        if missing:
            msg = f"{path} lacks obs column(s) {missing} in {key!r}: it is not the SNARE-seq layout."
            raise ScclipError(msg)
        adata.obs = adata.obs.loc[:, list(OBS_COLUMNS)].astype("category")
        adata.obs = adata.obs.apply(lambda s: s.cat.remove_unused_categories())
        if not sp.isspmatrix_csr(adata.X) or adata.X.dtype != np.float32:
            adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
        mods.append(adata)
    rna, atac = mods
    if not rna.obs_names.equals(atac.obs_names):
        msg = f"{path}: 'rna' and 'atac' hold different cells; the SNARE-seq data are paired."
        raise ScclipError(msg)
    return rna, atac


def _assemble(rna: ad.AnnData, atac: ad.AnnData, source: str) -> md.MuData:
    for adata in (rna, atac):
        adata.uns["genome"] = GENOME
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "atac": atac})
    for col in OBS_COLUMNS:
        mdata.obs[col] = rna.obs[col].array
    mdata.uns["genome"] = GENOME
    mdata.uns["description"] = (
        "SNARE-seq adult mouse cortex (Chen, Lake & Zhang 2019, Nat Biotechnol, GEO GSE126074), "
        "as redistributed by scMoMaT (github.com/PeterZZQ/scMoMaT, MIT), data/real/MOp_5batches"
    )
    mdata.uns["source"] = source
    return mdata


def _write_cache(rna: ad.AnnData, atac: ad.AnnData, path: Path) -> None:
    """Best effort: write the converted data atomically; a read-only folder only costs a re-conversion."""
    tmp = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        mdata = _assemble(rna.copy(), atac.copy(), str(path))
        with warnings.catch_warnings(), md.set_options(pull_on_update=False):
            warnings.simplefilter("ignore")
            mdata.write_h5mu(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        logger.warning("could not cache the converted SNARE-seq data at %s (%s)", path, err)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _select_batches(rna: ad.AnnData, atac: ad.AnnData, batches) -> tuple[ad.AnnData, ad.AnnData]:
    wanted = [batches] if isinstance(batches, str) else [str(b) for b in batches]
    have = list(rna.obs["batch"].cat.categories)
    unknown = [b for b in wanted if b not in have]
    if unknown or not wanted:
        what = f"unknown batches {unknown} requested" if unknown else "batches= is empty"
        msg = f"{what}; the data hold the libraries {have}."
        raise ScclipError(msg)
    keep = rna.obs["batch"].isin(wanted).to_numpy()
    out = []
    for adata in (rna, atac):
        sub = adata[keep].copy()
        sub.obs = sub.obs.apply(lambda s: s.cat.remove_unused_categories())
        out.append(sub)
    return out[0], out[1]


# --------------------------------------------------------------------------------------------- public
def chen2019_snareseq(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    batches: Sequence[str] | str | None = None,
    cache: bool = True,
) -> md.MuData:
    """The SNARE-seq adult mouse cortex data (paired RNA + ATAC, mm10) from a local folder or a download.

    The data directory is ``data_dir``, else the environment variable ``SCCLIP_DATA_DIR``, else
    ``~/.cache/scclip/datasets``. In it, the first of these that exists is used:

    1. ``data_dir`` itself when it is a ``.h5mu`` file;
    2. ``chen2019_snareseq.h5mu`` (a converted copy), then ``chen2019_snareseq_dev.h5mu`` (the development
       copy in ``../shared/data``, 10 of the 12 libraries);
    3. the five upstream files (``GxC1.npz``, ``RxC1.npz``, ``genes.txt``, ``regions.txt``, ``meta_c1.csv``) in
       the folder or its sub-folder ``chen2019_snareseq/``: they are converted, and the result is cached as
       ``chen2019_snareseq.h5mu`` when the folder is writable (``cache=False`` skips that);
    4. with ``download=True`` only: the upstream files are downloaded from the scMoMaT repository
       (``SNARESEQ_BASE_URL``, github.com/PeterZZQ/scMoMaT, MIT license) into ``chen2019_snareseq/``, each
       through a temporary file that is checked against ``SNARESEQ_FILES`` (sha256) and then renamed, so an
       interrupted or corrupted download leaves no partial file. Nothing is ever downloaded otherwise.

    From the shell: ``python -c "from scclip.datasets import chen2019_snareseq; chen2019_snareseq(download=True)"``
    (add ``data_dir='FOLDER'`` or set ``SCCLIP_DATA_DIR`` to choose where the files go).

    Parameters
    ----------
    data_dir
        Folder holding the data (or a converted ``.h5mu`` file); see above for the fallbacks.
    download
        Download the upstream files when the folder lacks the data (explicit, user-initiated; default False).
    batches
        Keep only these sequencing libraries (``obs['batch']``, e.g. ``["09A", "09B"]``); all by default.
        The upstream files hold 12 libraries (09A..09L); the development copy holds 09A..09J.
    cache
        Write a converted ``chen2019_snareseq.h5mu`` after converting the upstream files.

    Returns
    -------
    MuData with modalities ``rna`` (float32 CSR raw counts, gene symbols) and ``atac`` (float32 CSR raw counts,
    peaks ``chr:start-end`` with var columns chrom/start/end), the same cells in both, obs ``cell_type``,
    ``cell_type_fine`` and ``batch`` (categorical), and ``uns['genome'] == 'mm10'``.

    Raises
    ------
    ScclipError
        When the data are not found (the message names the folder searched, ``SCCLIP_DATA_DIR`` and how to
        download), when a download fails or does not match its sha256, or when a file is unreadable.
    """
    root, source = resolve_data_dir(data_dir)
    if root.suffix == ".h5mu" and not root.exists():
        msg = f"{root} ({source}) does not exist: pass an existing .h5mu file or the folder holding the data."
        raise ScclipError(msg)
    if root.is_file():
        if root.suffix != ".h5mu":
            msg = f"{root} ({source}) is a file but not a .h5mu: pass the folder holding the SNARE-seq data."
            raise ScclipError(msg)
        rna, atac = _read_converted(root)
        origin = str(root)
    else:
        converted = next((root / n for n in CONVERTED_FILES if (root / n).is_file()), None)
        if converted is not None:
            rna, atac = _read_converted(converted)
            origin = str(converted)
        else:
            raw = _find_raw(root)
            if raw is None:
                if not download:
                    raise _not_found(root, source)
                raw = _download(root / RAW_SUBDIR)
            rna, atac = convert_raw(raw)
            origin = str(raw)
            if cache:
                _write_cache(rna, atac, root / CONVERTED_FILES[0])
    if batches is not None:
        rna, atac = _select_batches(rna, atac, batches)
    return _assemble(rna, atac, origin)
