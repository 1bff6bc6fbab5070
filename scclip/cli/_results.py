"""``scclip match`` and ``scclip evaluate``: thin glue from embedded ``.h5mu`` files to tables and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scclip._constants import EMBED_KEY
from scclip.errors import ScclipError


def _read_embedded(path: str):
    import mudata as md


    if not Path(path).is_file():
        msg = f"{path} does not exist; create it with `scclip embed --model MODEL --data DATA --out {path}`"
        raise ScclipError(msg)
    try:
        mdata = md.read_h5mu(path)
    except Exception as err:  # not HDF5 / not a MuData layout
        msg = f"{path} is not a readable .h5mu file ({type(err).__name__}: {err}); pass the output of `scclip embed`"
        raise ScclipError(msg) from None
    missing = [m for m in ("rna", "atac") if m not in mdata.mod]
    if missing:
        msg = f"{path} lacks the {missing} modality; matching needs both rna and atac embeddings"
        raise ScclipError(msg)
    for m in ("rna", "atac"):
        if EMBED_KEY not in mdata[m].obsm:
            msg = f"{path}: mdata['{m}'].obsm has no '{EMBED_KEY}'; embed it first with `scclip embed --model ... --out {path}`"
            raise ScclipError(msg)
    return mdata


def _write_table(df, out: Path) -> None:
    if out.suffix == ".parquet":
        try:
            df.to_parquet(out, index=False)
        except ImportError:
            msg = "writing .parquet needs pyarrow (pip install pyarrow); or use a .csv output"
            raise ScclipError(msg) from None
    elif out.suffix in (".csv", ".gz") or out.name.endswith(".csv.gz"):
        df.to_csv(out, index=False)
    else:
        msg = f"--out {out}: use a .csv, .csv.gz or .parquet file name"
        raise ScclipError(msg)


def run_match(args) -> int:
    """Top-k partners table (and optionally a one-to-one assignment) from an embedded .h5mu."""
    from scclip.match import match_table, one_to_one

    if args.k < 1:
        msg = f"--k must be at least 1, got {args.k}"
        raise ScclipError(msg)
    out = Path(args.out)
    mdata = _read_embedded(args.data)
    rna, atac = mdata["rna"], mdata["atac"]
    paired = rna.n_obs == atac.n_obs and bool(np.all(rna.obs_names == atac.obs_names))
    k = min(args.k, rna.n_obs, atac.n_obs)
    table = match_table(
        rna.obsm[EMBED_KEY],
        atac.obsm[EMBED_KEY],
        rna_names=rna.obs_names,
        atac_names=atac.obs_names,
        k=k,
        paired=paired,
        sinkhorn=args.sinkhorn,
    )
    _write_table(table, out)
    result = {"out": str(out), "rows": len(table), "k": k, "paired": paired, "sinkhorn": args.sinkhorn}
    if args.one_to_one:
        pairs = one_to_one(
            rna.obsm[EMBED_KEY], atac.obsm[EMBED_KEY], rna_names=rna.obs_names, atac_names=atac.obs_names,
            method="sinkhorn" if args.sinkhorn else "auto",
        )  # fmt: skip
        stem = out.name[: -len("".join(out.suffixes))] if out.suffixes else out.name
        pairs_out = out.with_name(f"{stem}_one_to_one{''.join(out.suffixes)}")
        _write_table(pairs, pairs_out)
        result["one_to_one"] = str(pairs_out)
    print(json.dumps(result, indent=2))
    return 0


def run_evaluate(args) -> int:
    """Print the evaluation JSON of an embedded .h5mu."""
    from scclip.evaluate import evaluate

    mdata = _read_embedded(args.data)
    temperature = mdata.uns.get("scclip", {}).get("temperature") if hasattr(mdata, "uns") else None
    res = evaluate(mdata, label_key=args.label_key, temperature=temperature, sinkhorn=args.sinkhorn)
    print(json.dumps(res, indent=2))
    return 0
