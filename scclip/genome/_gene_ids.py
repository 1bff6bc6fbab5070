"""Gene identifiers: Ensembl ids (version, species), and matching genes by id, symbol or case-folded symbol.

Split from :mod:`scclip.genome`, which re-exports every public name here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from scclip.errors import GenomeMismatchError
from scclip.genome._assembly import SPECIES, genome_alias

ENSEMBL_RE = r"^ENS[A-Z]*G[0-9]{6,}(\.[0-9]+)?$"
_ENSEMBL_SPECIES = {"ENSG": "human", "ENSMUSG": "mouse"}


def looks_like_ensembl(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """Boolean mask: which values look like Ensembl gene ids (``ENSG00000141510``, ``ENSMUSG...``, versioned)."""
    return pd.Series(np.asarray(values).astype(str)).str.match(ENSEMBL_RE).to_numpy()


def strip_version(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """Drop Ensembl version suffixes (``ENSG00000141510.17`` -> ``ENSG00000141510``); strips blanks."""
    s = pd.Series(np.asarray(ids).astype(str)).str.strip()
    return s.str.replace(r"^(ENS[A-Z]*G[0-9]{6,})\.[0-9]+$", r"\1", regex=True).to_numpy().astype(str)


def ensembl_species(ids: Sequence[str] | np.ndarray) -> tuple[str | None, int]:
    """Majority species of Ensembl gene ids (``ENSG`` human, ``ENSMUSG`` mouse) and how many ids support it."""
    s = pd.Series(np.asarray(ids).astype(str))
    prefix = s[s.str.match(ENSEMBL_RE)].str.extract(r"^(ENS[A-Z]*G)")[0].map(_ENSEMBL_SPECIES).dropna()
    if prefix.empty:
        return None, 0
    counts = prefix.value_counts()
    return str(counts.index[0]), int(counts.iloc[0])


def _first_index(ref: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Position of each query value's first occurrence in ``ref`` (-1 when absent or empty)."""
    first = ~pd.Index(ref).duplicated()
    positions = np.flatnonzero(first)
    hit = pd.Index(ref[first]).get_indexer(query)
    out = np.where(hit >= 0, positions[np.maximum(hit, 0)], -1).astype(np.int64)
    out[query == ""] = -1
    return out


MATCH_NONE, MATCH_ID, MATCH_SYMBOL, MATCH_CASEFOLD = 0, 1, 2, 3
MATCH_NAMES = {MATCH_ID: "id", MATCH_SYMBOL: "symbol", MATCH_CASEFOLD: "symbol_casefold"}


def match_genes(
    query_ids: np.ndarray | None,
    query_symbols: np.ndarray,
    ref_ids: np.ndarray | None,
    ref_symbols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Match query genes onto reference genes: by id, then exact symbol, then case-insensitive symbol.

    Duplicated reference ids / symbols resolve to their first occurrence. Returns (index into the
    reference or -1, how) where ``how`` holds MATCH_ID / MATCH_SYMBOL / MATCH_CASEFOLD / MATCH_NONE.
    """
    q_sym = np.asarray(query_symbols).astype(str)
    r_sym = np.asarray(ref_symbols).astype(str)
    index = np.full(len(q_sym), -1, dtype=np.int64)
    how = np.zeros(len(q_sym), dtype=np.int8)
    if query_ids is not None and ref_ids is not None:
        r_ids = strip_version(ref_ids)
        if (r_ids != "").any():
            index = _first_index(r_ids, strip_version(query_ids))
            how[index >= 0] = MATCH_ID
    steps = ((MATCH_SYMBOL, r_sym, q_sym), (MATCH_CASEFOLD, np.char.lower(r_sym), np.char.lower(q_sym)))
    for code, ref, query in steps:
        todo = index < 0
        if not todo.any():
            break
        found = _first_index(ref, query[todo])
        sub = np.flatnonzero(todo)[found >= 0]
        index[sub] = found[found >= 0]
        how[sub] = code
    return index, how


def check_casefold(how: np.ndarray, genome: str | None, *, examples: Sequence[str] = ()) -> None:
    """Refuse gene matches that hold mostly by case-folding (human ``CD4`` vs mouse ``Cd4``): wrong species."""
    n_fold = int((how == MATCH_CASEFOLD).sum())
    n_exact = int(((how == MATCH_ID) | (how == MATCH_SYMBOL)).sum())
    if n_fold and n_fold > n_exact:
        shown = ", ".join(list(examples)[:5])
        msg = (
            f"genome mismatch: {n_fold} of {n_fold + n_exact} matched genes match the {genome or 'model'} gene "
            f"names only when case is ignored (e.g. {shown}), so the data look like another species (human "
            "symbols are upper-case, mouse ones capitalised). Use a model / genome of the data's species; if the "
            "symbols were deliberately re-cased, restore their original case."
        )
        raise GenomeMismatchError(msg)


def check_ensembl_species(ids: np.ndarray | None, genome: str | None) -> None:
    """Refuse Ensembl ids of another species than ``genome`` (``ENSG`` on mm10, ``ENSMUSG`` on hg38)."""
    canon = genome_alias(genome)
    if ids is None or canon not in SPECIES:
        return
    species, n = ensembl_species(ids)
    if species is not None and species != SPECIES[canon] and n >= max(1, 0.5 * len(ids)):
        msg = (
            f"genome mismatch: {n} of {len(ids)} gene ids are {species} Ensembl ids but the model's genome "
            f"{canon} is {SPECIES[canon]}; use a model trained on {species} data."
        )
        raise GenomeMismatchError(msg)
