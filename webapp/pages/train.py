"""Train: a new scCLIP model on paired cells, in a background process with live curves."""

from __future__ import annotations

import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from scclip import explore
from scclip.errors import ScclipError
from scclip.model import PRESETS
from webapp import common

common.ensure_app()
ss = st.session_state
common.page_header(
    "Train",
    "Train scCLIP on paired RNA + ATAC cells. Training runs in the background: you can keep exploring, and the "
    "finished model appears on the Model page.",
)
cuda = torch.cuda.is_available()
model = common.current_model(show=False)
data = ss.get("data")

# --------------------------------------------------------------------------- what to train on
sources = []
refused = ss.get("refused")
if refused is not None and {"rna", "atac"} <= set(refused["mdata"].mod):
    sources.append(("refused", f"Not loaded (no model fits it yet): {refused['label']}"))
if data is not None and {"rna", "atac"} <= set(data["mdata"].mod) and data.get("demo") is None:
    sources.append(("session", f"Current dataset: {data['label']}"))
order = {"snare-all": 0, "synthetic": 1, "snare-test": 2}
demos = sorted(
    (d for d in explore.list_demos() if d.available and d.key in order), key=lambda d: order[d.key]
)
sources += [(f"demo:{d.key}", d.label) for d in demos]
c1, c2 = st.columns([2, 1])
if ss.pop("train_source", None) == "refused" and refused is not None:  # from the Data page's button
    ss.train_src = "refused"
src = c1.selectbox(
    "Paired training data", [s for s, _ in sources], format_func=dict(sources).get, key="train_src"
)
run_name = c2.text_input("Run name", value=f"app-{time.strftime('%Y%m%d-%H%M')}", key="train_name")

feature_space = "own"
if src == "refused":
    mdata = refused["mdata"]
    feature_space = refused["data_genome"] if refused["data_genome"] in ("mm10", "hg38") else "own"
    features = (
        f"the bundled {feature_space} gene table and 5 kb genome bins"
        if feature_space != "own"
        else "the data's own genes and peaks"
    )
    st.info(
        f"Training on **{refused['label']}**, which the current model cannot embed. Features: {features}.",
        icon=":material/info:",
    )
elif src == "session":
    mdata = data["mdata"]
else:
    try:
        mdata, _ = common.demo_dataset(
            src.split(":", 1)[1], explore.synthetic_cells(model["model"].summary if model else None)
        )
    except ScclipError as err:
        common.show_error(err, "Training data")
        st.stop()
obs_cols = [c for c in mdata["rna"].obs.columns if 1 < mdata["rna"].obs[c].nunique() <= 100]

p1, p2, p3, p4 = st.columns(4)
preset = p1.selectbox("Architecture preset", list(PRESETS), index=list(PRESETS).index("default"), key="train_preset",
                      help="default: CPU-sized (2 layers, width 128); paper: the scCLIP paper's (6 layers, width 256); tiny: for tests")  # fmt: skip
epochs = p2.number_input("Epochs", 1, 500, 20, key="train_epochs")
lr = p3.number_input("Learning rate", 1e-5, 1e-1, 1e-3, format="%.0e", key="train_lr")
batch = p4.number_input("Batch size", 8, 4096, 256, step=32, key="train_batch")
q1, q2, q3, q4 = st.columns(4)
hold_opts = [None, *obs_cols]
hold_default = hold_opts.index("batch") if src == "demo:snare-all" and "batch" in obs_cols else 0
hold_key = q1.selectbox("Hold out cells by", hold_opts, index=hold_default, key="train_hold_key",
                        format_func=lambda x: "nothing held out" if x is None else x)  # fmt: skip
hold_vals = []
if hold_key:
    vals = sorted(map(str, mdata["rna"].obs[hold_key].dropna().unique()))
    default = [v for v in explore.SNARE_TEST_LIBRARIES if v in vals]
    hold_vals = q2.multiselect("Held-out values (test set)", vals, default=default, key="train_hold_vals")
val_size = q3.number_input("Validation cells (fraction)", 0.02, 0.5, 0.1, key="train_val")
devices = ["auto", "cpu"] + (["cuda"] if cuda else [])
device = q4.selectbox("Device", devices, key="train_device")

n_cells = mdata["rna"].n_obs
n_held = int(mdata["rna"].obs[hold_key].astype(str).isin(hold_vals).sum()) if hold_key else 0
n_train = int((n_cells - n_held) * (1 - val_size))
on_gpu = cuda and device != "cpu"
est = explore.estimate_train_seconds(n_train, int(epochs), preset, cuda=on_gpu)


def _fmt(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


msg = f"{n_train:,} training cells x {int(epochs)} epochs, preset **{preset}**, on **{'GPU' if on_gpu else 'CPU'}**: roughly **{_fmt(est)}** (early stopping may end sooner)."
if not on_gpu and est > 300:
    st.warning(
        f"Training on the CPU is slow. {msg} A CUDA GPU is typically 10-20x faster; the `tiny` preset or fewer "
        "epochs give a quick first model.",
        icon=":material/hourglass_top:",
    )
else:
    st.caption(msg)

run_dir = explore.runs_dir() / run_name.strip()
busy = [r["name"] for r in explore.list_runs() if r["status"] in ("running", "starting")]
if busy:
    st.warning(
        f"{', '.join(busy)} {'is' if len(busy) == 1 else 'are'} still training: a new run would share the "
        "machine with it (both slower). Stop it below, or wait until it is done.",
        icon=":material/warning:",
    )
if st.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start",
             disabled=not run_name.strip()):  # fmt: skip
    try:
        if src in ("session", "refused"):
            run_dir.mkdir(parents=True, exist_ok=True)
            from scclip.io import write_h5mu

            spec_data = {
                "path": str(write_h5mu(mdata, run_dir / "train_data.h5mu").resolve()),
                "label": (refused if src == "refused" else data)["label"],
            }
        else:
            spec_data = {"demo": src.split(":", 1)[1], "label": dict(sources)[src]}
        spec = {
            "data": spec_data,
            "preset": preset,
            "feature_space": feature_space,
            "train_config": {
                "epochs": int(epochs),
                "lr": float(lr),
                "batch_size": int(batch),
                "device": device,
            },
            "holdout_key": hold_key,
            "holdout": list(hold_vals),
            "val_size": float(val_size),
            "estimate_seconds": est,
        }
        explore.start_training(run_dir, spec)
        ss.active_run = str(run_dir)
        ss.train_view = run_dir.name  # the Run panel below shows the run just started
        st.toast(f"Training {run_name} started", icon=":material/play_arrow:")
    except (ScclipError, OSError) as err:
        common.show_error(err if isinstance(err, ScclipError) else ScclipError(str(err)), "Training")

# --------------------------------------------------------------------------- live progress
if not explore.list_runs():
    st.stop()
st.divider()


def _curve(x, ys: dict, title: str, yfmt: str = "") -> go.Figure:
    fig = go.Figure()
    for name, (y, color) in ys.items():
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=name,
                line={"color": color, "width": 2},
                marker={"size": 5},
            )
        )
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 35, "b": 10}, plot_bgcolor="white",
                      title={"text": title, "font": {"size": 13}}, legend={"orientation": "h", "y": -0.25},
                      yaxis={"gridcolor": "#eee", "tickformat": yfmt}, xaxis={"gridcolor": "#eee"})  # fmt: skip
    return fig


@st.fragment(run_every=2.0)
def progress_panel() -> None:
    runs = explore.list_runs()  # read every 2 s: the labels follow the runs' states
    names = [r["name"] for r in runs]
    status_of = {r["name"]: r["status"] for r in runs}
    if ss.get("train_view") not in names:
        ss.train_view = names[-1]
    sel = st.selectbox(
        "Run", names, format_func=lambda n: f"{n}  ({status_of.get(n, '?')})", key="train_view"
    )
    view_dir = explore.runs_dir() / sel
    prog = explore.read_progress(view_dir)
    if not prog:
        st.caption("No progress file: this run was trained outside the app.")
        return
    status = prog.get("status", "?")
    epochs_total = prog.get("epochs") or (prog.get("spec", {}).get("train_config", {}).get("epochs"))
    hist = pd.DataFrame(prog.get("history", []))
    done_epochs = len(hist)
    elapsed = prog.get("elapsed", 0.0)
    frac = 0.0
    if epochs_total:
        spe = prog.get("steps_per_epoch") or 1
        frac = (
            min(1.0, (prog.get("step", 0) / spe) / epochs_total)
            if prog.get("step")
            else done_epochs / epochs_total
        )
    icon, color = explore.RUN_STATUS_ICONS.get(status, ("help", "gray"))
    s1, s2, s3, s4 = st.columns(4)
    s1.markdown(f"Status  \n### :{color}[:material/{icon}: {status}]")
    s2.metric("Epoch", f"{done_epochs} / {epochs_total or '?'}")
    s3.metric("Elapsed", _fmt(elapsed))
    eta = explore.time_left(prog) if status == "running" else None
    s4.metric("Time left (estimate)", "—" if eta is None else _fmt(eta),
              help="From the recent step rate; early stopping may finish sooner.")  # fmt: skip
    if status in ("running", "starting"):
        st.progress(frac, text=f"{frac:.0%}")
        if st.button("Stop training", icon=":material/stop:", key="train_stop"):
            explore.stop_training(view_dir)
            st.toast("Stopping after the current steps…")
    if status == "failed":
        st.error(f"Training failed: {prog.get('error', 'unknown error')} (log: {view_dir / 'train.log'})")
        tail = prog.get("log_tail") or explore.log_tail(view_dir)
        if tail:
            with st.expander("End of the training log"):
                st.code(tail, language=None)
    if status in ("stopped", "failed"):
        if status == "stopped":
            st.warning(prog.get("note", "stopped by the user"))
        if (view_dir / "checkpoints" / "last.safetensors").is_file() and st.button(
            "Resume", icon=":material/resume:", key="train_resume", help="continue from the last checkpoint"
        ):
            try:
                explore.resume_training(view_dir)
                st.toast(f"Resuming {sel}", icon=":material/resume:")
            except ScclipError as err:
                common.show_error(err, "Resume")
    if status == "done":
        st.success(
            f"Model written to `{view_dir / 'model'}`; it is listed on the Model page.",
            icon=":material/check_circle:",
        )
        if st.button("Use this model now", key="train_use"):
            common.set_model(str(view_dir))
            st.rerun(scope="app")
    steps = pd.DataFrame(prog.get("steps", []))
    g1, g2, g3 = st.columns(3)
    if not steps.empty or not hist.empty:
        x, y = (steps["step"], steps["loss"]) if not steps.empty else (hist["epoch"], hist["loss"])
        g1.plotly_chart(_curve(x, {"training loss": (y, "#1f77b4")}, "Training loss (CLIP)"),
                        key="curve_loss", config={"displaylogo": False})  # fmt: skip
    if not hist.empty:
        g2.plotly_chart(_curve(hist["epoch"], {"validation top-1": (hist["val_top1"], "#2ca02c")}, "Validation top-1 matching", explore.percent_tickformat(hist["val_top1"])),
                        key="curve_top1", config={"displaylogo": False})  # fmt: skip
        g3.plotly_chart(_curve(hist["epoch"], {"validation FOSCTTM": (hist["val_foscttm"], "#d62728")}, "Validation FOSCTTM (lower is better)"),
                        key="curve_fos", config={"displaylogo": False})  # fmt: skip
    elif status in ("running", "starting"):
        st.caption("Curves appear after the first steps.")


progress_panel()
