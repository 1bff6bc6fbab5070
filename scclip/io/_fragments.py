"""Count a 10x ATAC ``fragments.tsv.gz`` into a cells x intervals matrix of Tn5 cut sites.

Counting convention (the one of Cell Ranger ATAC's peak-barcode matrix and of Signac):

* a fragment line ``chrom, start, end, barcode, count`` uses 0-based ``start`` and exclusive ``end``; it holds two
  Tn5 cut sites, at ``start`` and at ``end - 1``;
* an interval ``[start, end)`` (0-based, half-open, like BED) counts every cut site inside it, so one fragment adds
  2 to an interval containing both ends, 1 when only one end falls inside, 0 when it spans the interval;
* intervals may overlap: a cut site then counts for each interval containing it;
* the 5th column (how many read pairs were PCR duplicates of the fragment) is ignored: each unique fragment
  counts once.

The file is read in chunks (``pandas.read_csv(chunksize=...)``); each chunk is reduced to (cell, interval, count)
triplets, so memory stays proportional to the output matrix plus one chunk.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclip.errors import ScclipError
from scclip.genome import normalize_chroms

_POS_BITS = 40  # positions are offset by chromosome id << 40 to search all chromosomes at once
_COLUMNS = ["chrom", "start", "end", "barcode"]
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


class _IntervalIndex:
    """Map cut positions to the (possibly overlapping) intervals that contain them.

    The genome is cut at every interval boundary into elementary segments; each segment lists the intervals
    covering it (CSR ``seg_ptr`` / ``seg_ivl``), so one ``np.searchsorted`` finds all intervals of a position.
    """

    def __init__(self, chrom, start, end):
        codes, chroms = pd.factorize(normalize_chroms(chrom))  # chr1 == 1, chrM == MT
        self.chroms = pd.Index(chroms)
        offset = codes.astype(np.int64) << _POS_BITS
        gstart, gend = offset + start, offset + end
        self.bounds = np.unique(np.concatenate([gstart, gend]))
        lo, hi = np.searchsorted(self.bounds, gstart), np.searchsorted(self.bounds, gend)
        seg = _ranges(lo, hi - lo)
        ivl = np.repeat(np.arange(len(lo)), hi - lo)
        order = np.argsort(seg, kind="stable")
        self.seg_ivl = ivl[order]
        self.seg_ptr = np.concatenate([[0], np.cumsum(np.bincount(seg, minlength=len(self.bounds) - 1))])

    def lookup(self, chrom_id: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For positions (``chrom_id`` into ``self.chroms``), return (position index, interval index) pairs."""
        gpos = (chrom_id.astype(np.int64) << _POS_BITS) + pos
        seg = np.searchsorted(self.bounds, gpos, side="right") - 1
        inside = np.flatnonzero((seg >= 0) & (seg < len(self.bounds) - 1))
        seg = seg[inside]
        n_hit = self.seg_ptr[seg + 1] - self.seg_ptr[seg]
        return np.repeat(inside, n_hit), self.seg_ivl[_ranges(self.seg_ptr[seg], n_hit)]


def _ranges(first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(f, f + n)`` for each (f, n), vectorised."""
    lengths = np.asarray(lengths, dtype=np.int64)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(np.asarray(first, dtype=np.int64), lengths) + within


def _lookup(mapping: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``mapping[codes]`` with -1 for missing values (code -1) or unknown categories."""
    out = np.full(len(codes), -1, dtype=np.int64)
    ok = codes >= 0
    out[ok] = np.asarray(mapping, dtype=np.int64)[codes[ok]]
    return out


def _check_intervals(chrom, start, end, feature_names) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.Index]:
    chrom = np.asarray(chrom).astype(str)
    try:
        start = np.asarray(start, dtype=np.int64)
        end = np.asarray(end, dtype=np.int64)
    except (TypeError, ValueError) as err:
        msg = f"Interval starts and ends must be integers ({err})."
        raise ScclipError(msg) from err
    if not (len(chrom) == len(start) == len(end)) or len(chrom) == 0:
        msg = f"chrom, start and end must be non-empty and of one length (got {len(chrom)}, {len(start)}, {len(end)})."
        raise ScclipError(msg)
    bad = np.flatnonzero((start < 0) | (end <= start) | (end >= 2**_POS_BITS))
    if bad.size:
        i = bad[0]
        msg = (
            f"{bad.size} intervals are invalid (need 0 <= start < end), e.g. {chrom[i]}:{start[i]}-{end[i]}."
        )
        raise ScclipError(msg)
    if feature_names is None:
        feature_names = pd.Index(chrom) + ":" + start.astype(str) + "-" + end.astype(str)
    feature_names = pd.Index(feature_names).astype(str)
    if len(feature_names) != len(chrom):
        msg = f"feature_names has {len(feature_names)} names for {len(chrom)} intervals."
        raise ScclipError(msg)
    if not feature_names.is_unique:
        dup = feature_names[feature_names.duplicated()][:3].tolist()
        msg = f"Feature names (intervals) must be unique; duplicated: {dup}."
        raise ScclipError(msg)
    return chrom, start, end, feature_names


def _compression(path: Path) -> str | None:
    """``'gzip'`` or ``None`` by the file's first bytes (not its name); refuses a BGZF file (the 10x format)
    without its end-of-file block, i.e. cut short (a file cut at a block boundary would read without error)."""
    with open(path, "rb") as fh:
        head = fh.read(18)
        if head[:2] != b"\x1f\x8b":
            return None
        fh.seek(max(0, path.stat().st_size - len(_BGZF_EOF)))
        tail = fh.read()
    if head[3] & 4 and head[12:14] == b"BC" and tail != _BGZF_EOF:
        msg = (
            f"{path} is cut short: the BGZF end-of-file block of a 10x fragments file is missing (an incomplete "
            "download or copy); copy the whole file again"
        )
        raise ScclipError(msg)
    return "gzip"


def _chunks(path: Path, chunksize: int):
    return pd.read_csv(
        path,
        sep="\t",
        comment="#",
        header=None,
        usecols=[0, 1, 2, 3],
        names=_COLUMNS,
        dtype={"chrom": "category", "start": np.int64, "end": np.int64, "barcode": "category"},
        chunksize=chunksize,
        compression=_compression(path),
        encoding="utf-8-sig",  # a byte-order mark is not part of the first chromosome name
    )


def count_fragments(
    path,
    chrom,
    start,
    end,
    *,
    barcodes=None,
    feature_names=None,
    min_count: int | None = None,
    chunksize: int = 1_000_000,
) -> ad.AnnData:
    """Count the Tn5 cut sites of each cell in each interval from a 10x fragments file.

    Parameters
    ----------
    path
        ``fragments.tsv.gz`` (or plain ``.tsv``): ``#`` comment lines, then tab-separated chrom, start, end,
        barcode[, count].
    chrom, start, end
        The intervals, 0-based half-open ``[start, end)``, in any order, of any width, overlaps allowed.
    barcodes
        Keep only these cells, in this order (cells without fragments get empty rows). Default: every barcode
        in the file, in order of first appearance.
    feature_names
        Names of the intervals (default ``chrom:start-end``).
    min_count
        Drop cells with fewer than this many fragments in the whole file (``obs['n_fragments']``).
    chunksize
        Lines read at a time.

    Returns
    -------
    AnnData cells x intervals: ``X`` float32 CSR cut-site counts; ``obs['n_fragments']`` (fragments of the cell in
    the file) and ``obs['n_counts']`` (cut sites in the intervals); ``var`` chrom/start/end.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"Fragments file {path} does not exist: give the 10x fragments.tsv.gz of the sample."
        raise ScclipError(msg)
    chrom, start, end, feature_names = _check_intervals(chrom, start, end, feature_names)
    counter = _CutSiteCounter(_IntervalIndex(chrom, start, end), len(feature_names), barcodes)
    try:
        for chunk in _chunks(path, chunksize):
            _check_lines(chunk, path)
            counter.add(chunk)
    except ScclipError:
        raise
    except pd.errors.EmptyDataError as err:
        msg = f"{path} holds no fragments (no line besides '#' comments): give the sample's fragments.tsv.gz"
        raise ScclipError(msg) from err
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        msg = f"{path} is damaged or cut short ({type(err).__name__}: {err}): copy the whole file again"
        raise ScclipError(msg) from err
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        why = " ".join(str(err).split())[:300]
        msg = (
            f"Could not read {path} as a 10x fragments file: malformed lines ({type(err).__name__}: {why}); "
            "every line must be chrom, start, end, barcode, count, tab-separated ('#' starts a comment): fix or "
            "remove those lines, or re-export the file from Cell Ranger"
        )
        raise ScclipError(msg) from err
    if not counter.file_chroms:
        msg = f"{path} holds no fragments (no line besides '#' comments): give the sample's fragments.tsv.gz"
        raise ScclipError(msg)
    if not counter.file_chroms & set(counter.index.chroms):
        msg = (
            f"No chromosome of {path} (e.g. {sorted(counter.file_chroms)[:3]}) matches the intervals' "
            f"(e.g. {counter.index.chroms[:3].tolist()}): check the 'chr' prefix and the genome build."
        )
        raise ScclipError(msg)
    names, X = counter.matrix()
    obs = pd.DataFrame(
        {"n_fragments": counter.n_frag, "n_counts": np.asarray(X.sum(axis=1)).ravel()}, index=names
    )
    var = pd.DataFrame({"chrom": chrom, "start": start, "end": end}, index=feature_names)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["fragments"] = {
        "path": str(path),
        "counting": "Tn5 cut sites (fragment start and end - 1) inside [start, end); duplicates count once",
    }
    if min_count is not None:
        adata = adata[adata.obs["n_fragments"].to_numpy() >= min_count].copy()
    return adata


def _check_lines(chunk: pd.DataFrame, path: Path) -> None:
    """Refuse lines without a barcode, with end < start, a negative start or a position no genome has."""
    start, end = chunk["start"], chunk["end"]
    bad_rows = chunk["barcode"].isna() | (end < start) | (start < 0) | (end >= 2**_POS_BITS)
    if bad_rows.any():
        bad = chunk[bad_rows].iloc[0]
        msg = (
            f"{path} has malformed lines (e.g. {bad['chrom']}\t{bad['start']}\t{bad['end']}\t"
            f"{bad['barcode']}: a missing barcode, end < start, a negative start or a position beyond any "
            "chromosome); every line must be chrom, start, end, barcode, count, tab-separated: fix or remove "
            "those lines"
        )
        raise ScclipError(msg)


class _CutSiteCounter:
    """(cell, interval) cut-site counts accumulated over the chunks of a fragments file, and each cell's
    number of fragments. Cells are ``barcodes`` in that order, or every barcode in order of first appearance."""

    def __init__(self, index: _IntervalIndex, n_intervals: int, barcodes=None) -> None:
        self.index, self.n_ivl = index, n_intervals
        self.known: pd.Index | None = None
        self.ids: dict[str, int] | None = {}
        if barcodes is not None:
            self.known = pd.Index(np.asarray(barcodes).astype(str))
            if not self.known.is_unique:
                msg = "barcodes must be unique: each names one cell."
                raise ScclipError(msg)
            self.ids = None
        self.n_frag = np.zeros(0 if self.ids is not None else len(self.known), dtype=np.int64)
        self.pieces: list[tuple[np.ndarray, np.ndarray]] = []
        self.file_chroms: set[str] = set()

    def add(self, chunk: pd.DataFrame) -> None:
        """Count one chunk's fragments: both cut sites (start and end - 1) of each known cell's fragment."""
        cats = chunk["barcode"].cat.categories
        if self.ids is None:
            bmap = self.known.get_indexer(cats)
        else:
            ids = self.ids
            bmap = np.fromiter((ids.setdefault(b, len(ids)) for b in cats), dtype=np.int64, count=len(cats))
            self.n_frag = np.pad(self.n_frag, (0, len(ids) - len(self.n_frag)))
        cell = _lookup(bmap, chunk["barcode"].cat.codes.to_numpy())
        self.n_frag += np.bincount(cell[cell >= 0], minlength=len(self.n_frag))
        chroms = normalize_chroms(chunk["chrom"].cat.categories.astype(str))
        self.file_chroms.update(chroms)
        cmap = self.index.chroms.get_indexer(chroms)
        chrom_id = _lookup(cmap, chunk["chrom"].cat.codes.to_numpy())
        keep = np.flatnonzero((cell >= 0) & (chrom_id >= 0))
        if keep.size == 0:
            return
        cell, chrom_id = cell[keep], chrom_id[keep]
        cuts = np.concatenate([chunk["start"].to_numpy()[keep], chunk["end"].to_numpy()[keep] - 1])
        which, ivl = self.index.lookup(np.concatenate([chrom_id, chrom_id]), cuts)
        self.pieces.append(
            np.unique(np.concatenate([cell, cell])[which] * self.n_ivl + ivl, return_counts=True)
        )

    def matrix(self) -> tuple[pd.Index, sp.csr_matrix]:
        """(cell barcodes, float32 CSR cells x intervals of cut-site counts)."""
        names = self.known if self.ids is None else pd.Index(list(self.ids), dtype=str)
        empty = np.zeros(0, dtype=np.int64)
        codes = np.concatenate([p[0] for p in self.pieces]) if self.pieces else empty
        counts = np.concatenate([p[1] for p in self.pieces]) if self.pieces else empty
        X = sp.csr_matrix(
            (counts.astype(np.float32), (codes // self.n_ivl, codes % self.n_ivl)),
            shape=(len(names), self.n_ivl),
            dtype=np.float32,
        )
        return names, X


def atac_from_fragments(path, features, *, barcodes=None, min_count: int | None = None) -> ad.AnnData:
    """ATAC cells counted from a fragments file directly onto a model's ATAC features (bins or peaks).

    Parameters
    ----------
    path
        10x ``fragments.tsv.gz``.
    features
        The model's :class:`~scclip.features.ModalityFeatures` for ``atac`` (``model.feature_space['atac']``).
    barcodes
        Cells to keep, in order (e.g. the RNA file's barcodes for a paired upload); default every barcode.
    min_count
        Without ``barcodes``: keep cells with at least this many fragments (default 500, a common floor for real
        nuclei; background barcodes of a 10x run are dropped).

    Returns
    -------
    AnnData whose var are exactly the model's features (identity mapping), ``uns['genome']`` the model's.
    """
    if features.modality != "atac":
        msg = f"fragments are counted onto ATAC features, got the model's {features.modality} features"
        raise ScclipError(msg)
    with_coords = features.chrom != ""
    if not with_coords.any():
        msg = "the model's ATAC features carry no coordinates; fragments cannot be counted onto them"
        raise ScclipError(msg)
    if barcodes is None and min_count is None:
        min_count = 500
    adata = count_fragments(
        path,
        features.chrom[with_coords],
        features.start[with_coords],
        features.end[with_coords],
        barcodes=barcodes,
        feature_names=features.names[with_coords],
        min_count=min_count,
    )
    if adata.n_obs == 0:
        msg = f"no cell of {path} has {min_count} or more fragments: lower --min-fragments or check the file"
        raise ScclipError(msg)
    if features.genome:
        adata.uns["genome"] = features.genome
    return adata


def covered_by_fragments(path, chrom, start, end, *, max_gap: int = 3000) -> np.ndarray:
    """Which intervals lie inside the regions a fragments file covers (bool per interval).

    A region is a run of fragment starts with no gap wider than ``max_gap`` bp. Used to compare counts from a
    *subset* fragments file (e.g. windows around a few genes) with a peak matrix of the whole genome: outside the
    covered regions the file simply holds no fragments.
    """
    frags = pd.read_csv(path, sep="\t", comment="#", header=None, usecols=[0, 1])
    chrom = np.asarray(chrom).astype(str)
    start, end = np.asarray(start), np.asarray(end)
    covered = np.zeros(len(chrom), dtype=bool)
    for c, group in frags.groupby(0):
        pos = np.sort(group[1].to_numpy())
        gap = np.flatnonzero(np.diff(pos) > max_gap)
        lo, hi = np.r_[pos[0], pos[gap + 1]], np.r_[pos[gap], pos[-1]]
        on = np.flatnonzero(chrom == c)
        # the region that starts last at or before each interval's start must reach its end
        k = np.searchsorted(lo, start[on], side="right") - 1
        covered[on] = (k >= 0) & (hi[np.maximum(k, 0)] >= end[on])
    return covered
