"""Build the compact reference tables shipped in ``scclip/data`` from the public annotation tables.

Inputs (``--annotations DIR``, default ``../shared/annotations`` beside the repository):

- ``mm10_genes.tsv.gz`` (gene_id empty, gene_name, chrom, start, end, strand; RefSeq refFlat, 0-based starts)
- ``hg38_genes.tsv.gz`` (Ensembl gene_id, gene_name, chrom, start, end, strand; 1-based inclusive starts)
- ``mm10_chrom_sizes.tsv``, ``hg38_chrom_sizes.tsv`` (UCSC lengths, no header)

Outputs (``--out DIR``, default ``scclip/data``): ``{genome}_genes.tsv.gz`` with columns gene_id, gene_name,
chrom, start, end as 0-based half-open intervals (hg38 starts shifted by -1), mitochondrion named ``chrM``,
rows in natural genome order (chr1..chr22/19, X, Y, M, then start); strand is dropped (unused). Chromosome
sizes are copied in natural order. The gzip header carries no timestamp, so reruns are byte-identical.

Usage::

    python scripts/build_reference_tables.py [--annotations ../shared/annotations] [--out scclip/data]
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scclip.genome import genome_order, normalize_chroms  # noqa: E402

GENOMES = {"mm10": {"one_based": False}, "hg38": {"one_based": True}}


def build_genes(src: Path, *, one_based: bool) -> pd.DataFrame:
    """Read one source gene table and return the compact, genome-ordered table."""
    df = pd.read_csv(src, sep="\t", dtype=str, keep_default_na=False, na_values=[])
    out = pd.DataFrame(
        {
            "gene_id": df["gene_id"].str.strip(),
            "gene_name": df["gene_name"].str.strip(),
            "chrom": normalize_chroms(df["chrom"].to_numpy()),
            "start": df["start"].astype("int64") - (1 if one_based else 0),
            "end": df["end"].astype("int64"),
        }
    )
    out = out[(out["gene_name"] != "") & (out["chrom"] != "")]
    order = genome_order(out["chrom"].to_numpy(), out["start"].to_numpy())
    return out.iloc[order].reset_index(drop=True)


def write_tsv_gz(df: pd.DataFrame, path: Path) -> None:
    """Write a tab-separated table gzip-compressed (level 9, no timestamp)."""
    text = df.to_csv(sep="\t", index=False, lineterminator="\n")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(text.encode())
    path.write_bytes(buf.getvalue())


def build_sizes(src: Path) -> str:
    """Chromosome sizes (UCSC names) in natural order, as TSV text without header."""
    sizes = pd.read_csv(src, sep="\t", header=None, names=["chrom", "size"], dtype={"chrom": str})
    sizes["chrom"] = normalize_chroms(sizes["chrom"].to_numpy())
    sizes = sizes.iloc[genome_order(sizes["chrom"].to_numpy(), [0] * len(sizes))]
    return "".join(f"{c}\t{int(n)}\n" for c, n in zip(sizes["chrom"], sizes["size"], strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, default=REPO.parent / "shared" / "annotations")
    parser.add_argument("--out", type=Path, default=REPO / "scclip" / "data")
    args = parser.parse_args(argv)
    if not args.annotations.is_dir():
        print(
            f"error: annotation folder {args.annotations} not found; pass --annotations DIR", file=sys.stderr
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for genome, opts in GENOMES.items():
        genes = build_genes(args.annotations / f"{genome}_genes.tsv.gz", one_based=opts["one_based"])
        gz_path = args.out / f"{genome}_genes.tsv.gz"
        write_tsv_gz(genes, gz_path)
        sizes_path = args.out / f"{genome}_chrom_sizes.tsv"
        sizes_path.write_text(build_sizes(args.annotations / f"{genome}_chrom_sizes.tsv"))
        n_chrom = genes["chrom"].nunique()
        size_kb = gz_path.stat().st_size / 1024
        print(
            f"{genome}: {len(genes)} genes on {n_chrom} chromosomes -> {gz_path} ({size_kb:.0f} KiB), {sizes_path}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
