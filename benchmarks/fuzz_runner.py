"""Run one fuzz case (issue 19): build the mutated file, hand it to a public reader, judge the outcome.

A case is fully determined by ``(seed, index)``: :func:`make_case` picks the seed file, the mutation family and the
door (``read``, ``read`` with a ``modality=``, ``read_pair``, the app's ``read_uploads`` + ``validation_summary``,
``count_fragments``). Outcomes:

* ``read``: the reader returned data that pass every check (float32 CSR, indices in range, finite, non-negative,
  unique barcodes, shapes that agree) and, where the mutation keeps the content, equal the reference;
* ``refused``: a :class:`scclip.errors.ScclipError` with a one-line message;
* ``failure``: anything else: another exception (a traceback), a crash (signal), a hang (time limit), a memory
  blow-up (the child's address space is capped), an unclear message, or data accepted that should not be.

:func:`run_isolated` runs a case in a forked child so that a segfault or a hang is counted, not fatal.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from fuzz_h5 import AD_FAMILIES, TENX_FAMILIES, Mutation, pick
from fuzz_text import FRAG_FAMILIES, MTX_FAMILIES, TAR_FAMILIES, pair_cells

FAMILIES = {
    "ad": AD_FAMILIES,
    "tenx": TENX_FAMILIES,
    "mtx": MTX_FAMILIES,
    "tar": TAR_FAMILIES,
    "frag": FRAG_FAMILIES,
    "pair": {"pair_cells": (1, pair_cells)},
}
#: how often each kind of seed file is drawn
KIND_WEIGHTS = {"ad": 10, "tenx": 5, "mtx": 2, "tar": 2, "frag": 4, "pair": 1}


@dataclass
class Case:
    seed: int
    index: int
    base: str
    family: str
    door: str

    def label(self) -> str:
        return f"#{self.index} {self.family} on {self.base} via {self.door}"


def make_case(bases: dict, seed: int, index: int, families: set[str] | None = None) -> Case:
    """The case ``index`` of run ``seed``: which seed file, mutation family and door."""
    rng = np.random.default_rng([seed, index, 0])
    kinds = [k for k in KIND_WEIGHTS if any(b.kind == k for b in bases.values())]
    if families:
        kinds = [k for k in kinds if set(FAMILIES[k]) & families]
    w = np.array([KIND_WEIGHTS[k] for k in kinds], dtype=float)
    kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
    fams = {n: v for n, v in FAMILIES[kind].items() if not families or n in families}
    fw = np.array([v[0] for v in fams.values()], dtype=float)
    family = list(fams)[int(rng.choice(len(fams), p=fw / fw.sum()))]
    base = pick(rng, sorted(n for n, b in bases.items() if b.kind == kind))
    doors = {"frag": ["fragments", "fragments", "uploads"], "pair": ["read_pair"], "mtx": ["read"]}
    door = pick(rng, doors.get(kind, ["read", "read", "modality", "uploads"]))
    if door == "modality" and len(bases[base].ref) < 2:
        door = "read"
    return Case(seed, index, base, family, door)


# --------------------------------------------------------------------------------------------- doors
def _fake_model(peaks):
    chrom, start, end = peaks
    names = np.char.add(
        np.char.add(np.char.add(chrom, ":"), start.astype(str)), np.char.add("-", end.astype(str))
    )
    return SimpleNamespace(
        feature_space={"atac": SimpleNamespace(chrom=chrom, start=start, end=end, names=names)}
    )


def open_door(case: Case, base, mut: Mutation, extra) -> tuple[dict, dict]:
    """Hand the mutated input to the case's public reader, then ask for the peaks' coordinates (the next step of
    every user of the readers): (modalities read, expected modalities)."""
    from scclip.features import var_intervals

    mods, ref = _door(case, base, mut, extra)
    if "atac" in mods:
        var_intervals(mods["atac"])
    return mods, ref


def _door(case: Case, base, mut: Mutation, extra) -> tuple[dict, dict]:
    from scclip.explore.uploads import read_uploads, validation_summary
    from scclip.fragments import count_fragments
    from scclip.io import read, read_pair

    path = mut.path
    ref = mut.ref if mut.ref is not None else base.ref
    if case.door == "fragments":
        return {"atac": count_fragments(path, *base.extra["peaks"])}, ref
    if case.door == "read_pair":
        mdata, _ = read_pair(*extra, paired=True)
        return dict(mdata.mod), ref
    if case.door == "modality":
        mod = mut.mod or sorted(base.ref)[case.index % len(base.ref)]
        return dict(read(path, modality=mod).mod), {mod: ref[mod]} if mod in ref else {}
    if case.door == "uploads":
        files = [(path.name, path.read_bytes())]
        model = None
        if base.kind == "frag":
            rna = base.extra["rna_h5ad"]
            files, model = [(rna.name, rna.read_bytes()), *files], _fake_model(base.extra["peaks"])
            ref = base.extra["upload_ref"]
        mdata, _ = read_uploads(files, model=model)
        validation_summary(mdata)
        return dict(mdata.mod), ref
    return dict(read(path).mod), ref


# --------------------------------------------------------------------------------------------- judging
def invariant_problem(mods: dict) -> str | None:
    """Why data returned by a reader are not a valid count matrix (None when they are)."""
    if not mods:
        return "returned no modality"
    for m, a in mods.items():
        X = a.X
        if not (sp.issparse(X) and X.format == "csr" and X.dtype == np.float32):
            return f"{m}: X is {type(X).__name__} {getattr(X, 'dtype', '')}, not float32 CSR"
        try:
            X.check_format(full_check=True)
        except ValueError as err:
            return f"{m}: X is not a valid CSR matrix ({err})"
        if X.shape != (a.n_obs, a.n_vars) or a.n_obs == 0 or a.n_vars == 0:
            return f"{m}: X is {X.shape} for {a.n_obs} cells x {a.n_vars} features"
        if not np.isfinite(X.data).all() or (X.data < 0).any():
            return f"{m}: X holds NaN, infinite or negative values"
        if not a.obs_names.is_unique:
            return f"{m}: duplicate barcodes accepted"
    return None


def compare(mods: dict, ref: dict, align: bool) -> str | None:
    """Where data read differ from the expected modalities (None when equal)."""
    if set(mods) != set(ref):
        return f"modalities {sorted(mods)} read, {sorted(ref)} expected"
    for m, r in ref.items():
        a = mods[m]
        obs = np.asarray(a.obs_names).astype(str)
        X = sp.csr_matrix(a.X)
        if align and set(obs) == set(r.obs):
            order = {o: i for i, o in enumerate(obs)}
            X, obs = X[[order[o] for o in r.obs]], r.obs
        if not np.array_equal(obs, r.obs):
            return (
                f"{m}: barcodes differ from the reference (e.g. {obs[:2].tolist()} vs {r.obs[:2].tolist()})"
            )
        if not np.array_equal(np.asarray(a.var_names).astype(str), r.var):
            return f"{m}: feature names differ (e.g. {list(a.var_names[:2])} vs {r.var[:2].tolist()})"
        if X.shape != r.X.shape or (X != r.X).nnz:
            return f"{m}: counts differ from the reference ({X.shape} vs {r.X.shape})"
        if r.coords is not None:
            from scclip.features import var_intervals

            got = var_intervals(a)[:3]
            if not all(
                np.array_equal(np.asarray(g), np.asarray(e)) for g, e in zip(got, r.coords, strict=True)
            ):
                return f"{m}: peak coordinates differ (e.g. {got[0][0]}:{got[1][0]}-{got[2][0]} vs {r.coords[0][0]}:{r.coords[1][0]}-{r.coords[2][0]})"
    return None


def judge(mods: dict, ref: dict, mut: Mutation, case: Case, base) -> tuple[str, str]:
    problem = invariant_problem(mods)
    if problem:
        return "failure", f"silent garbage: {problem}"
    if mut.expect == "refuse" and case.door == "modality" and mut.mod is None:
        mut.expect = "valid"  # the damage may lie in the modality not asked for
    if mut.expect == "refuse":
        return (
            "failure",
            f"accepted a file that should be refused ({', '.join(f'{m} {a.shape}' for m, a in mods.items())})",
        )
    if mut.expect in ("read", "maybe"):
        diff = compare(mods, ref, align=case.door == "fragments")
        return ("failure", f"read, but {diff}") if diff else ("read", "")
    for m, a in mods.items():  # "valid": the content is unknown, the shapes are not
        if base.kind == "frag":
            continue
        r = base.ref.get(m)
        if r is None:
            return "failure", f"modality {m} read from a file without one"
        fewer_cells = case.door in ("uploads", "read_pair")
        if a.n_vars > len(r.var) or a.n_obs > len(r.obs) or (a.n_obs < len(r.obs) and not fewer_cells):
            return (
                "failure",
                f"read, but {m} is {a.shape} (reference {r.X.shape}): the shape changed silently",
            )
    return "read", ""


def run_case(case: Case, bases: dict, work: Path, *, verbose: bool = False) -> dict:
    """Build and read one case in this process: ``{"outcome": read / refused / failure, "detail", "mutation"}``."""
    from scclip.errors import ScclipError

    base = bases[case.base]
    rng = np.random.default_rng([case.seed, case.index, 1])
    dst = Path(tempfile.mkdtemp(prefix=f"case{case.index}_", dir=work))
    out = {"case": case.label(), "seed": case.seed, "index": case.index, "mutation": ""}
    try:
        made = FAMILIES[base.kind][case.family][1](
            rng, base, dst / Path(base.path).name if base.kind in ("ad", "tenx") else dst
        )
    except Exception as err:
        return {
            **out,
            "outcome": "failure",
            "detail": f"harness could not build the case: {type(err).__name__}: {err}",
        }
    mut, extra = made if isinstance(made, tuple) else (made, None)
    if mut.path is None:
        mut.path = dst / Path(base.path).name
    out["mutation"] = mut.text
    try:
        mods, ref = open_door(case, base, mut, extra)
    except ScclipError as err:
        msg = str(err)
        if "\n" in msg or not msg.strip() or len(msg) > 1500:
            return {
                **out,
                "outcome": "failure",
                "detail": f"unclear refusal message ({len(msg)} chars): {msg[:300]!r}",
            }
        if mut.expect == "read":
            return {**out, "outcome": "failure", "detail": f"refused a file that should read: {msg}"}
        return {**out, "outcome": "refused", "detail": msg}
    except BaseException as err:  # a traceback: the failure class the fuzzing is for
        tb = traceback.extract_tb(err.__traceback__)[-1]
        if verbose:
            traceback.print_exc()
        where = f"{Path(tb.filename).name}:{tb.lineno}"
        return {
            **out,
            "outcome": "failure",
            "detail": f"traceback {type(err).__name__} at {where}: {str(err)[:300]}",
        }
    outcome, detail = judge(mods, ref, mut, case, base)
    return {**out, "outcome": outcome, "detail": detail}


# --------------------------------------------------------------------------------------------- isolation
def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def run_isolated(case: Case, bases: dict, work: Path, *, timeout: float = 30.0, mem_mb: int = 3072) -> dict:
    """:func:`run_case` in a forked child whose address space grows by at most ``mem_mb`` MB; a crash, a hang
    past ``timeout`` seconds or a memory blow-up come back as failures."""
    limit = _vm_bytes() + mem_mb * 1024**2
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            res = run_case(case, bases, work)
            if "MemoryError" in res.get("detail", ""):
                res["detail"] = "memory blow-up: " + res["detail"]
            payload = json.dumps(res).encode()
            with os.fdopen(w, "wb") as fh:
                fh.write(payload)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline, timed_out = [], time.monotonic() + timeout, False
    with os.fdopen(r, "rb") as fh:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fh], [], [], left)
            if ready:
                data = os.read(fh.fileno(), 1 << 16)
                if not data:
                    break
                chunks.append(data)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    base = {
        "case": case.label(),
        "seed": case.seed,
        "index": case.index,
        "mutation": "",
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    if timed_out:
        return {**base, "outcome": "failure", "detail": f"hang: no answer within {timeout:g} s"}
    if os.WIFSIGNALED(status):
        return {
            **base,
            "outcome": "failure",
            "detail": f"crash: the reader died with signal {os.WTERMSIG(status)}",
        }
    try:
        return {**json.loads(b"".join(chunks)), "peak_rss_mb": base["peak_rss_mb"]}
    except ValueError:
        return {
            **base,
            "outcome": "failure",
            "detail": f"the child exited with status {os.WEXITSTATUS(status)} and no result (memory?)",
        }
