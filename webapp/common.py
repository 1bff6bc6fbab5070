"""Streamlit glue shared by the pages: session state, cached models, the current dataset and its embedding.

Per-user data (datasets, embeddings, selections) live in ``st.session_state``; models are shared read-only
through ``st.cache_resource``; embeddings and UMAP coordinates are cached on disk by :mod:`scclip.explore`.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from scclip import explore
from scclip.errors import ScclipError
from scclip.explore.events import record

MAX_JOINTS = 3  # embeddings kept per session
OOM = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


# --------------------------------------------------------------------------- start-up
def ensure_app() -> None:
    """Set up the session state a page needs (call it first thing in every page).

    Pages live in ``webapp/pages/``, not in a ``pages/`` folder beside ``app.py``: Streamlit never discovers
    them on its own, so every request (a bookmark of ``/data`` included) runs ``app.py``, whose
    ``st.navigation`` lists the five pages from the first paint.
    """
    init_state()


# --------------------------------------------------------------------------- errors
def show_error(err: BaseException, what: str = "") -> None:
    """A readable message for a user-caused error; unexpected ones get a short message and a folded detail."""
    prefix = f"{what}: " if what else ""
    if isinstance(err, ScclipError):
        st.error(f"{prefix}{err}", icon=":material/error:")
    elif isinstance(err, OOM):
        st.error(
            f"{prefix}out of memory. Use a smaller dataset (subset the cells) or a machine with more memory.",
            icon=":material/memory:",
        )
    else:
        st.error(f"{prefix}{type(err).__name__}: {err}", icon=":material/error:")
        with st.expander("Technical details (for a bug report)"):
            st.code("".join(traceback.format_exception(err))[-4000:])


# --------------------------------------------------------------------------- models
@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _load_model(model_dir: str, fingerprint: str):
    import scclip

    model = scclip.load_pretrained(model_dir)
    record("model_load", model_dir)  # counted by the load test: once per model, not once per session
    model.net.eval()
    for p in model.net.parameters():
        p.requires_grad_(False)
    return model


def model_entry(ref: str) -> dict:
    """``{"ref", "dir", "fp", "model", "name"}`` for a model name or folder (raises ScclipError)."""
    from scclip.pretrained import resolve_model_dir

    d = resolve_model_dir(ref)
    fp = explore.model_fingerprint(d)
    with torch.inference_mode():
        model = _load_model(str(d.resolve()), fp)
    return {"ref": ref, "dir": d, "fp": fp, "model": model, "name": _model_label(ref, d)}


def _model_label(ref: str, d: Path) -> str:
    return d.parent.name if d.name == "model" else d.name


def init_state() -> None:
    ss = st.session_state
    if "model_ref" not in ss:
        model, demo = explore.default_choice()
        ss.model_ref = model
        ss.default_demo = demo
    ss.setdefault("data", None)
    ss.setdefault("joints", {})
    ss.setdefault("query_cell", None)
    ss.setdefault("group_cells", None)


def current_model(show: bool = True) -> dict | None:
    ref = st.session_state.get("model_ref")
    if not ref:
        if show:
            st.warning(
                "No model is installed. Train one on the **Train** page, or load a model folder on the "
                "**Model** page.",
                icon=":material/warning:",
            )
        return None
    try:
        return model_entry(ref)
    except ScclipError as err:
        if show:
            show_error(err, f"Model {ref!r}")
        return None


def set_model(ref: str) -> None:
    st.session_state.model_ref = ref
    reset_selection()


# --------------------------------------------------------------------------- datasets
@st.cache_resource(show_spinner="Loading the demo dataset…", max_entries=6)
def demo_dataset(key: str, n_synthetic: int):
    mdata = explore.load_demo(key, model_summary={"pairing": {"n_rna": n_synthetic}, "data": "synthetic"})
    record("demo_load", key)
    return mdata, explore.dataset_fingerprint(mdata)


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=2)
def _server_file(path: str, mtime: int):
    mdata, _ = explore.read_files([Path(path)])
    return mdata, explore.dataset_fingerprint(mdata)


def load_demo_into_session(key: str, model: dict | None) -> None:
    summary = model["model"].summary if model else None
    mdata, fp = demo_dataset(key, explore.synthetic_cells(summary))
    label = next(d.label for d in explore.list_demos() if d.key == key)
    set_data(mdata, label=label, source=f"demo: {key}", fp=fp, demo=key)


def set_data(
    mdata, *, label: str, source: str, fp: str | None = None, notes=(), demo: str | None = None
) -> None:
    st.session_state.data = {
        "mdata": mdata,
        "label": label,
        "source": source,
        "fp": fp or explore.dataset_fingerprint(mdata),
        "notes": list(notes),
        "demo": demo,
    }
    reset_selection()


def accept_data(
    mdata, model: dict | None, *, label: str, source: str, fp: str | None = None, notes=()
) -> bool:
    """Make ``mdata`` the session's dataset only if ``model`` can embed it.

    A refused dataset (wrong species or assembly, no feature in common) leaves the previous dataset in place:
    ``st.session_state.refused`` then holds it, its label and the plain-words reason
    (:func:`scclip.explore.refusal`) for the Data page, and the Train page can train a model on it.
    """
    summary = explore.validation_summary(mdata, model["model"] if model else None)
    refused = explore.refusal(summary, model["model"] if model else None)
    if refused is not None:
        st.session_state.refused = {**refused, "mdata": mdata, "label": label, "notes": list(notes)}
        return False
    st.session_state.pop("refused", None)
    set_data(mdata, label=label, source=source, fp=fp, notes=notes)
    return True


def model_and_data() -> tuple[dict, dict]:
    """The session's model and dataset for a page that needs both; stops the page (after saying why) if not."""
    model = current_model()
    data = current_data(model) if model else None
    if model is None or data is None:
        st.stop()
    return model, data


def current_data(model: dict | None) -> dict | None:
    """The session's dataset; the default demo is loaded on first use."""
    ss = st.session_state
    if ss.data is None and os.environ.get("SCCLIP_DEFAULT_DATA"):
        path = Path(os.environ["SCCLIP_DEFAULT_DATA"]).expanduser()
        try:
            mdata, fp = _server_file(str(path), path.stat().st_mtime_ns)
            set_data(mdata, label=path.name, source=str(path), fp=fp)
        except (ScclipError, OSError) as err:
            show_error(ScclipError(str(err)), "Loading $SCCLIP_DEFAULT_DATA")
    if ss.data is None:
        demo = ss.get("default_demo", "synthetic")
        avail = {d.key: d.available for d in explore.list_demos()}
        if not avail.get(demo, False):
            demo = "synthetic"
        try:
            load_demo_into_session(demo, model)
        except ScclipError as err:
            show_error(err, "Loading the demo dataset")
            return None
    return ss.data


def reset_selection() -> None:
    ss = st.session_state
    ss.query_cell = None
    ss.group_cells = None
    for k in list(ss.keys()):
        if str(k).startswith(("umap_", "sel_sig_")):
            del ss[k]


# --------------------------------------------------------------------------- embeddings
def joint_for(model: dict, data: dict, *, run: bool = True):
    """The embedded joint view of the session's dataset (cached per model and dataset), or None.

    Runs ``scclip.embed`` (disk-cached) and the UMAP with a progress display when ``run``.
    """
    key = (model["fp"], data["fp"])
    joints = st.session_state.joints
    if key in joints:
        return joints[key]
    if not run:
        return None
    mdata = data["mdata"]
    n = {m: mdata[m].n_obs for m in mdata.mod}
    what = " + ".join(f"{v:,} {explore.MODALITY_LABELS.get(m, m)}" for m, v in n.items())
    notes: list[str] = []  # cache notes: a corrupt entry recomputed, an unusable cache folder
    try:
        with st.status(f"Embedding {what} cells with **{model['name']}**…", expanded=True) as status:
            bar = st.progress(0.05, text="Mapping features onto the model and encoding cells…")
            t0 = time.perf_counter()
            with torch.inference_mode():
                emb, cached = explore.embed_cached(
                    model["model"], mdata, model_fp=model["fp"], data_fp=data["fp"], notes=notes
                )
            t1 = time.perf_counter()
            bar.progress(
                0.5, text=f"Embedded in {t1 - t0:.1f} s{' (from cache)' if cached else ''}. Joint UMAP…"
            )
            joint = explore.add_qc(explore.joint_from_embedded(emb), mdata)
            joint.umap, ucached = explore.umap_cached(joint.Z, key=f"{model['fp']}-{data['fp']}", notes=notes)
            t2 = time.perf_counter()
            bar.progress(1.0, text=f"UMAP in {t2 - t1:.1f} s{' (from cache)' if ucached else ''}.")
            status.update(
                label=f"Embedded {what} cells with **{model['name']}** ({t2 - t0:.1f} s)",
                state="complete",
                expanded=False,
            )
    except (ScclipError, *OOM) as err:
        show_error(err, "Embedding")
        return None
    finally:
        show_cache_notes(notes)
    joint.info["embedded"], joint.info["key"] = emb, key
    while len(joints) >= MAX_JOINTS:
        joints.pop(next(iter(joints)))
    joints[key] = joint
    return joint


@st.cache_data(show_spinner=False, max_entries=32)
def _metrics_of(key: tuple, label, label_fp: str, temperature: float, _joint) -> dict:
    return explore.embedding_metrics(_joint, label, temperature=temperature)


def shared_metrics(joint, label, temperature: float) -> dict:
    """:func:`scclip.explore.embedding_metrics`, shared by every session that shows the same model, dataset and
    label column (a second visitor of the default page does not score the embedding again)."""
    key = joint.info.get("key")
    if key is None:
        return explore.embedding_metrics(joint, label, temperature=temperature)
    label_fp = "" if label is None else str(pd.util.hash_pandas_object(joint.obs[label], index=False).sum())
    return _metrics_of(key, label, label_fp, float(temperature), joint)


def show_cache_notes(notes: list[str]) -> None:
    """Cache notes under the embedding: an unusable cache folder is said once per session."""
    for n in notes:
        if n.startswith(explore.CACHE_OFF_NOTE):
            if st.session_state.get("cache_off_shown"):
                continue
            st.session_state.cache_off_shown = True
            text = n[len(explore.CACHE_OFF_NOTE) :]
            st.warning(text[:1].upper() + text[1:], icon=":material/cloud_off:")
        else:
            st.info(n[:1].upper() + n[1:], icon=":material/build:")


def preload_defaults() -> None:
    """Load the default demo into a fresh session (cached, quiet) so that every page shows the same state."""
    if st.session_state.get("data") is None and st.session_state.get("model_ref"):
        try:
            current_data(model_entry(st.session_state.model_ref))
        except ScclipError:
            pass  # the pages show the error


# --------------------------------------------------------------------------- layout
def sidebar_summary() -> None:
    ss = st.session_state
    with st.sidebar:
        st.markdown("##### Current session")
        ref = ss.get("model_ref")
        st.markdown(f"**Model** · `{Path(str(ref)).name if ref else 'none'}`")
        data = ss.get("data")
        st.markdown(f"**Data** · {data['label'] if data else '_default demo (loads on Explore)_'}")
        st.caption(f"Device: {explore.device_description()}")


def page_header(title: str, subtitle: str = "") -> None:
    st.markdown(f"## {title}")
    if subtitle:
        st.caption(subtitle)
