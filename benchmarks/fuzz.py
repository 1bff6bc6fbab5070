"""Fuzz the public readers with mutated real files (issue 19) and print the counts.

Seeds: the real small files of ``../shared/data/formats`` (PBMC .h5mu, Cell Ranger .h5, Matrix Market archive,
fragments), a cell subset of the SNARE-seq file, and the PBMC cells re-written as Cell Ranger .h5, Matrix Market
folder / archive, .h5ad and a BGZF fragments subset. Each case mutates one seed (``fuzz_h5``, ``fuzz_text``) and
reads it through ``scclip.io.read`` / ``read_pair``, the app's ``read_uploads`` or ``count_fragments``, in a forked
child under a time and memory limit (``fuzz_runner``). Every case must read correctly or be refused with one clear
``ScclipError`` line; everything else is a failure, listed with its mutation and the command that reruns it.

    python benchmarks/fuzz.py --cases 2000 --seed 0 --time-limit 3600
    python benchmarks/fuzz.py --seed 0 --only 137 --keep /tmp/case137   # rerun one case in-process, traceback shown
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_bases import build_bases
from fuzz_runner import make_case, run_case, run_isolated

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SCCLIP_SHARED_DIR", REPO.parent / "shared")) / "data"


def summarize(results: list[dict]) -> dict:
    counts = collections.Counter(r["outcome"] for r in results)
    return {
        "cases tried": len(results),
        "read correctly": counts["read"],
        "refused clearly": counts["refused"],
        "failures": counts["failure"],
    }


def print_report(results: list[dict], seed: int, out=sys.stdout) -> None:
    s = summarize(results)
    print(", ".join(f"{k}: {v}" for k, v in s.items()), file=out)
    by_family = collections.defaultdict(collections.Counter)
    for r in results:
        by_family[r["case"].split(" ")[1]][r["outcome"]] += 1
    for fam in sorted(by_family):
        c = by_family[fam]
        print(
            f"  {fam:<16} read {c['read']:>4}  refused {c['refused']:>4}  failures {c['failure']:>3}",
            file=out,
        )
    for r in results:
        if r["outcome"] == "failure":
            print(f"FAILURE {r['case']}: {r['mutation']}: {r['detail']}", file=out)
            print(
                f"    rerun: python benchmarks/fuzz.py --seed {seed} --only {r['index']} --keep /tmp/case{r['index']}",
                file=out,
            )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000, help="number of generated cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--time-limit", type=float, default=None, help="stop starting new cases after this many seconds"
    )
    ap.add_argument(
        "--case-timeout", type=float, default=30.0, help="seconds one case may take (else: a hang)"
    )
    ap.add_argument(
        "--mem-mb", type=int, default=3072, help="address space one case may add (else: a blow-up)"
    )
    ap.add_argument(
        "--only", type=int, nargs="*", help="rerun these case indices in-process (tracebacks shown)"
    )
    ap.add_argument("--families", nargs="*", help="only these mutation families (e.g. ad_huge frag_lines)")
    ap.add_argument("--keep", type=Path, help="keep the seed and mutated files in this folder")
    ap.add_argument("--json", type=Path, help="write every case's outcome to this JSON file")
    args = ap.parse_args(argv)
    if not (DATA / "formats").exists():
        print(f"the real seed files are absent ({DATA / 'formats'}); nothing to fuzz", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="scclip_fuzz_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    bases = build_bases(work / "bases", DATA / "formats", DATA / "chen2019_snareseq_dev.h5mu", seed=args.seed)
    print(f"{len(bases)} seed files ready in {time.time() - t0:.0f} s: {', '.join(bases)}", flush=True)
    fams = set(args.families) if args.families else None
    results = []
    if args.only is not None:
        for i in args.only:
            case = make_case(bases, args.seed, i, fams)
            res = run_case(case, bases, work, verbose=True)
            print(json.dumps(res, indent=1))
            results.append(res)
        return 1 if any(r["outcome"] == "failure" for r in results) else 0
    t0 = time.time()
    for i in range(args.cases):
        if args.time_limit is not None and time.time() - t0 > args.time_limit:
            print(f"time limit reached after {i} cases", flush=True)
            break
        case = make_case(bases, args.seed, i, fams)
        res = run_isolated(case, bases, work, timeout=args.case_timeout, mem_mb=args.mem_mb)
        results.append(res)
        if res["outcome"] == "failure":
            print(f"FAILURE {res['case']}: {res['mutation']}: {res['detail']}", flush=True)
        if (i + 1) % 100 == 0:
            print(f"[{time.time() - t0:.0f} s] {i + 1} cases: {summarize(results)}", flush=True)
    print(f"\n{time.time() - t0:.0f} s, seed {args.seed}")
    print_report(results, args.seed)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any(r["outcome"] == "failure" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
