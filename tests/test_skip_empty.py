"""Empty-patch skipping (``ModelConfig.skip_empty_patches``) is exact: packed tokens with a key-padding mask give
the outputs and gradients of the dense sequence in which empty patches are masked out of attention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from scclip.cli import build_parser
from scclip.model import ModelConfig, ScCLIP, get_preset
from scclip.model.jagged import Jagged
from scclip.model.patch import SparseBatch

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


def _layout(n: int, n_patches: int) -> dict:
    ps = -(-n // n_patches)
    i = np.arange(n)
    return {"patch": i // ps, "offset": i % ps, "n_patches": n_patches, "patch_size": ps}


def _cells(n_cells: int, n_features: int, density: float, seed: int, empty=(), full=()) -> sp.csr_matrix:
    """Seeded sparse cells; rows in ``empty`` have no non-zero, rows in ``full`` have every feature."""
    X = sp.random(n_cells, n_features, density=density, format="lil", random_state=seed, dtype=np.float32)
    for r in empty:
        X[r, :] = 0
    for r in full:
        X[r, :] = np.linspace(0.5, 1.5, n_features, dtype=np.float32)
    return sp.csr_matrix(X)


def _encoder(mode: str, n_layers: int, n_features: int, n_patches: int, skip: bool, training: bool):
    torch.manual_seed(0)
    cfg = ModelConfig(
        d_model=16,
        n_layers=n_layers,
        n_heads=4,
        d_ff=32,
        proj_dim=8,
        n_patches=n_patches,
        dropout=0.0,
        feature_dropout=0.0,
        embedding_init="random",
        patch_embedding=mode,
        skip_empty_patches=skip,
    )
    enc = ScCLIP(cfg, {"rna": _layout(n_features, n_patches)}).encoders["rna"]
    with torch.no_grad():  # distinct per-patch biases: an empty patch's token is not a zero vector
        enc.embed.bias.normal_()
    return enc.train(training)


def _masked_dense(enc, X: sp.csr_matrix) -> torch.Tensor:
    """The reference: every token through every block, empty patches masked out of attention by hand."""
    dense = torch.from_numpy(X.toarray())
    tokens = enc.embed.dense_reference(dense)  # (B, P, d)
    patch = enc.embed.patch
    occupied = torch.stack([(dense[:, patch == p] != 0).any(1) for p in range(enc.embed.n_patches)], 1)
    keep = torch.cat([torch.ones(len(dense), 1, dtype=torch.bool), occupied], 1)  # (B, P+1)
    x = torch.cat([enc.cls.expand(len(dense), -1, -1), tokens], 1) + enc.pos
    B, T, d = x.shape
    for blk in enc.blocks:
        h = blk.attn.n_heads
        q, k, v = blk.attn.qkv(blk.ln1(x)).view(B, T, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / (d // h) ** 0.5  # (B, h, T, T)
        att = att.masked_fill(~keep[:, None, None, :], float("-inf")).softmax(-1)
        x = x + blk.attn.out((att @ v).transpose(1, 2).reshape(B, T, d))
        x = x + blk.mlp(blk.ln2(x))
    return F.normalize(enc.proj(enc.ln_f(x[:, 0])), dim=-1)


def _close_grads(got: dict, want: dict) -> None:
    """fp32 gradients equal up to summation order (absolute tolerance scaled by each gradient's size: in
    float64 both paths agree to ~1e-8, the encoder's final fp32 cast)."""
    assert got.keys() == want.keys()
    for k, g in want.items():
        atol = 1e-6 * max(1.0, float(g.abs().max()))
        torch.testing.assert_close(got[k], g, rtol=1e-4, atol=atol, msg=lambda m, n=k: f"{n}: {m}")


def _outputs_and_grads(enc, fn) -> tuple[torch.Tensor, dict]:
    enc.zero_grad(set_to_none=True)
    out = fn()
    out.pow(3).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in enc.named_parameters() if p.grad is not None}


CASES = [  # (cells, features, patches, density, all-empty cells, fully occupied cells)
    (1, 30, 5, 0.2, (), ()),
    (1, 30, 5, 0.2, (0,), ()),  # one cell, [CLS] only
    (7, 30, 5, 0.15, (2,), (4,)),
    (16, 64, 8, 0.05, (0, 9), ()),
    (5, 40, 10, 0.5, (), ()),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", ["per_patch", "shared"])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_skipping_equals_the_masked_dense_computation(case, mode, n_layers):
    n_cells, n_features, n_patches, density, empty, full = case
    X = _cells(n_cells, n_features, density, seed=n_cells + n_patches, empty=empty, full=full)
    enc = _encoder(mode, n_layers, n_features, n_patches, skip=True, training=True)
    fast, g_fast = _outputs_and_grads(enc, lambda: enc(SparseBatch.from_csr(X)))
    ref, g_ref = _outputs_and_grads(enc, lambda: _masked_dense(enc, X))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    _close_grads(g_fast, g_ref)


def test_skipping_with_activation_checkpointing_and_in_eval_mode():
    X = _cells(9, 48, 0.1, seed=3, empty=(5,))
    enc = _encoder("per_patch", 2, 48, 8, skip=True, training=True)
    ref, g_ref = _outputs_and_grads(enc, lambda: _masked_dense(enc, X))
    enc.checkpoint_blocks = True
    fast, g_fast = _outputs_and_grads(enc, lambda: enc(SparseBatch.from_csr(X)))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    _close_grads(g_fast, g_ref)
    with torch.inference_mode():
        torch.testing.assert_close(enc.eval()(SparseBatch.from_csr(X)), ref, rtol=1e-5, atol=1e-6)


def test_a_cell_of_only_empty_patches_embeds_its_cls_token_alone():
    """With every patch empty only [CLS] (plus its position) is left: the output does not depend on the
    per-patch biases, which it does without skipping."""
    X = _cells(3, 30, 0.3, seed=1, empty=(1,))
    outs = {}
    for skip in (True, False):
        enc = _encoder("per_patch", 2, 30, 5, skip=skip, training=False)
        with torch.no_grad():
            before = enc(SparseBatch.from_csr(X))
            enc.embed.bias.add_(torch.randn(enc.embed.bias.shape, generator=torch.Generator().manual_seed(1)))
            after = enc(SparseBatch.from_csr(X))
        outs[skip] = (before, after)
    torch.testing.assert_close(outs[True][0][1], outs[True][1][1])
    assert not torch.allclose(outs[False][0][1], outs[False][1][1], atol=1e-4)
    assert not torch.allclose(outs[True][0], outs[False][0], atol=1e-4)  # the switch changes the model


def _first_block_input(enc, X) -> torch.Tensor:
    seen = []
    hook = enc.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args))
    with torch.no_grad():
        enc(SparseBatch.from_csr(X))
    hook.remove()
    return seen[0]


@pytest.mark.parametrize("case", CASES)
def test_only_non_empty_tokens_enter_and_attention_pads_to_the_largest_count(case):
    n_cells, n_features, n_patches, density, empty, full = case
    X = _cells(n_cells, n_features, density, seed=7, empty=empty, full=full)
    patch = np.asarray(_layout(n_features, n_patches)["patch"])
    coo = X.tocoo()
    per_cell = [len(set(patch[coo.col[(coo.row == r) & (coo.data != 0)]])) for r in range(n_cells)]
    x, _, layout = _first_block_input(_encoder("per_patch", 2, n_features, n_patches, True, False), X)
    assert layout.n_tokens == n_cells + sum(per_cell)  # one [CLS] per cell + the non-empty patches
    assert x.shape[0] == layout.n_slots == sum(g.n_cells * g.length for g in layout.groups)  # the slot buffer
    assert layout.length == 1 + max(per_cell)  # the largest packed (padded) attention length
    assert sum(g.mask.sum().item() for g in layout.groups) == layout.n_tokens  # every real token, once
    x_dense, _, none = _first_block_input(_encoder("per_patch", 2, n_features, n_patches, False, False), X)
    assert x_dense.shape[:2] == (n_cells, 1 + n_patches) and none is None


def test_jagged_layout_keeps_order_and_masks_padding():
    keep = torch.tensor([[True, False, True, False, True], [True, False, False, False, False]])
    lay = Jagged.from_keep(keep)
    dense = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)  # tokens 0, 2, 4 | 5 are kept
    slots = lay.gather(dense)
    (padded,) = lay.split(slots)  # two cells: one attention group
    assert (lay.length, lay.n_cells, lay.n_tokens, lay.n_slots) == (3, 2, 4, 6)
    assert lay.order.tolist() == [1, 0]  # group order: by token count
    assert padded[:, :, 0].tolist() == [[5.0, 0.0, 0.0], [0.0, 2.0, 4.0]]  # original token order, zero padding
    assert padded.data_ptr() == slots.data_ptr()  # a view of the buffer, not a copy
    assert lay.groups[0].mask[:, 0, 0].tolist() == [[True, False, False], [True, True, True]]
    assert lay.cls_rows(slots)[:, 0].tolist() == [5.0, 0.0]  # group order
    assert lay.to_batch_order(lay.cls_rows(slots))[:, 0].tolist() == [0.0, 5.0]  # batch order
    assert lay.index.tolist() == [3, 6, 4, 6, 5, 0, 6, 6, 6, 6]  # slot of every dense token, S if dropped


def test_attention_groups_pad_cells_of_similar_counts_together():
    """Cells sorted by token count, cut into groups of equal size, each padded to its own largest count: every
    real token sits in exactly one slot, the padded work is below one padding to the batch's largest count,
    the slot buffer stays close to the real tokens, and gathers and the [CLS] rows round-trip in batch order."""
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(1, 40, (100,), generator=g)
    counts[[3, 50]] = torch.tensor([1, 40])  # [CLS] alone, and a cell of every token
    keep = torch.arange(40)[None, :] < counts[:, None]
    keep = keep[:, torch.randperm(40, generator=g)]
    keep[:, 0] = True
    counts = keep.sum(1)
    lay = Jagged.from_keep(keep)
    assert len(lay.groups) == 6  # 100 cells // 16, at most MAX_GROUPS
    assert [gr.n_cells for gr in lay.groups] == [17, 17, 17, 17, 16, 16]
    sorted_counts = counts[lay.order]
    assert torch.all(sorted_counts[1:] >= sorted_counts[:-1])
    first = 0
    for gr in lay.groups:
        assert gr.length == int(sorted_counts[first : first + gr.n_cells].max())
        assert torch.equal(gr.mask[:, 0, 0].sum(1), sorted_counts[first : first + gr.n_cells])
        first += gr.n_cells
    work = sum(gr.n_cells * gr.length**2 for gr in lay.groups)
    assert work < 0.7 * len(counts) * int(counts.max()) ** 2  # attention work, (b K^2) summed
    assert lay.n_tokens == int(counts.sum()) <= lay.n_slots < 1.15 * lay.n_tokens  # little padding
    dense = torch.randn(100, 40, 3, generator=g)
    slots = lay.gather(dense)
    real = torch.cat([gr.mask[:, 0, 0].flatten() for gr in lay.groups])  # (S,) real slots
    assert torch.equal(slots[real].abs().sum(), dense[keep].abs().sum())  # every kept token once
    assert not slots[~real].any()  # zeros in the padding
    back = torch.cat([slots, slots.new_zeros(1, 3)])[lay.index].view(100, 40, 3)
    assert torch.equal(back[keep], dense[keep])  # each dense token's slot holds it
    assert torch.equal(lay.to_batch_order(lay.cls_rows(slots)), dense[:, 0])
    assert len(Jagged.from_keep(keep, max_groups=1).groups) == 1


def test_setting_is_saved_and_old_configs_load_without_it():
    cfg = get_preset("tiny", skip_empty_patches=True)
    assert json.loads(json.dumps(cfg.to_dict()))["skip_empty_patches"] is True
    assert ModelConfig.from_dict(cfg.to_dict()).skip_empty_patches is True
    assert ModelConfig.from_dict({}).skip_empty_patches is False
    for name in ("demo-synthetic", "mouse-cortex-snareseq"):  # released before the setting existed
        saved = json.loads((PRETRAINED / name / "config.json").read_text())["model"]
        assert ModelConfig.from_dict(saved).skip_empty_patches is saved.get("skip_empty_patches", False)


def test_cli_switch_reaches_the_parser():
    base = ["train", "--data", "d.h5mu", "--out", "runs/x"]
    p = build_parser()
    assert p.parse_args([*base, "--skip-empty-patches"]).skip_empty_patches is True
    assert p.parse_args([*base, "--no-skip-empty-patches"]).skip_empty_patches is False
    assert p.parse_args(base).skip_empty_patches is None


def test_skipping_is_exact_on_a_larger_batch_in_the_batch_order():
    """70 cells: four attention groups of similar counts, the outputs back in the batch order."""
    X = _cells(70, 60, 0.06, seed=11, empty=(0, 69))
    enc = _encoder("shared", 2, 60, 6, skip=True, training=True)
    fast, g_fast = _outputs_and_grads(enc, lambda: enc(SparseBatch.from_csr(X)))
    ref, g_ref = _outputs_and_grads(enc, lambda: _masked_dense(enc, X))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    _close_grads(g_fast, g_ref)
