"""Speed paths keep the numbers: embedding_bag patch tokens, activation checkpointing, precision switch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scclip.errors import ScclipError
from scclip.model import ClipLoss, ModelConfig, ScCLIP
from scclip.model.patch import PatchEmbedding, SparseBatch
from scclip.training import TrainConfig, wrap_model


def _layout(n: int, n_patches: int) -> dict:
    ps = -(-n // n_patches)
    i = np.arange(n)
    return {"patch": i // ps, "offset": i % ps, "n_patches": n_patches, "patch_size": ps}


@pytest.mark.parametrize("mode", ["shared", "per_patch"])
def test_unsorted_csr_columns_and_empty_cells_match_dense(mode):
    torch.manual_seed(0)
    lay = _layout(50, 7)
    emb = PatchEmbedding(
        lay["patch"], lay["offset"], n_patches=7, patch_size=lay["patch_size"], d_model=8, mode=mode
    )
    with torch.no_grad():
        emb.bias.normal_()
    X = sp.random(6, 50, density=0.25, format="csr", random_state=4, dtype=np.float32)
    X = sp.csr_matrix(X.multiply(np.array([[1], [1], [0], [1], [1], [1]], dtype=np.float32)))  # cell 2 empty
    rev = X.copy()
    for r in range(rev.shape[0]):  # reverse the column order inside every row
        lo, hi = rev.indptr[r], rev.indptr[r + 1]
        rev.indices[lo:hi], rev.data[lo:hi] = rev.indices[lo:hi][::-1].copy(), rev.data[lo:hi][::-1].copy()
    rev.has_sorted_indices = False
    dense = emb.dense_reference(torch.from_numpy(X.toarray()))
    torch.testing.assert_close(emb(SparseBatch.from_csr(rev)), dense, rtol=1e-5, atol=1e-5)


def test_shared_embedding_gradients_match_dense():
    torch.manual_seed(0)
    lay = _layout(40, 5)
    emb = PatchEmbedding(
        lay["patch"], lay["offset"], n_patches=5, patch_size=lay["patch_size"], d_model=8, mode="shared"
    )
    X = sp.random(5, 40, density=0.3, format="csr", random_state=2, dtype=np.float32)
    emb(SparseBatch.from_csr(X)).pow(2).sum().backward()
    g = emb.weight.grad.clone()
    emb.weight.grad = None
    emb.dense_reference(torch.from_numpy(X.toarray())).pow(2).sum().backward()
    torch.testing.assert_close(g, emb.weight.grad, rtol=1e-4, atol=1e-6)


def _loss_and_grads(checkpointing: bool) -> tuple[float, dict]:
    torch.manual_seed(0)
    cfg = ModelConfig(
        d_model=16,
        n_layers=2,
        n_heads=2,
        d_ff=32,
        proj_dim=8,
        n_patches=4,
        dropout=0.2,
        patch_embedding="shared",
        feature_dropout=0.2,
        embedding_init="random",
    )
    model = ScCLIP(cfg, {"rna": _layout(30, 4), "atac": _layout(45, 4)}).train()
    net = wrap_model(model, TrainConfig(activation_checkpointing=checkpointing))
    rna = SparseBatch.from_csr(sp.random(10, 30, density=0.3, format="csr", random_state=0, dtype=np.float32))
    atac = SparseBatch.from_csr(
        sp.random(10, 45, density=0.2, format="csr", random_state=1, dtype=np.float32)
    )
    torch.manual_seed(1)  # the same dropout draws in both runs
    loss = ClipLoss()(*net(rna, atac))
    loss.backward()
    assert model.encoders["rna"].checkpoint_blocks is checkpointing
    return loss.item(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_identical_loss_and_gradients():
    loss, grads = _loss_and_grads(False)
    loss_ckpt, grads_ckpt = _loss_and_grads(True)
    assert loss_ckpt == loss
    assert grads.keys() == grads_ckpt.keys()
    for name, g in grads.items():
        torch.testing.assert_close(
            grads_ckpt[name], g, rtol=1e-6, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_precision_setting():
    assert TrainConfig().bf16 is None
    assert TrainConfig(precision="bf16").bf16 is True and TrainConfig(precision="fp32").bf16 is False
    with pytest.raises(ScclipError, match="precision"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize("mode", ["shared", "per_patch"])
def test_non_contiguous_layout_and_unsorted_batch_use_the_general_path(mode):
    torch.manual_seed(0)
    lay = _layout(40, 5)
    perm = np.random.default_rng(0).permutation(40)  # patches are no longer contiguous feature ranges
    emb = PatchEmbedding(
        lay["patch"][perm],
        lay["offset"][perm],
        n_patches=5,
        patch_size=lay["patch_size"],
        d_model=8,
        mode=mode,
    )
    assert not emb.contiguous
    X = sp.random(4, 40, density=0.3, format="csr", random_state=3, dtype=np.float32)
    dense = emb.dense_reference(torch.from_numpy(X.toarray()))
    torch.testing.assert_close(emb(SparseBatch.from_csr(X)), dense, rtol=1e-5, atol=1e-5)
    b = SparseBatch.from_csr(X)
    flipped = SparseBatch(b.rows.flip(0), b.cols.flip(0), b.values.flip(0), b.n_cells)  # sorted_cols=False
    torch.testing.assert_close(emb(flipped), dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_cls_only_last_block_equals_the_full_transformer(training):
    """The encoder computes only [CLS] in its last block; outputs and gradients equal the full computation."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        d_model=16,
        n_layers=3,
        n_heads=4,
        d_ff=32,
        proj_dim=8,
        n_patches=5,
        dropout=0.0,
        feature_dropout=0.0,
        embedding_init="random",
    )
    enc = ScCLIP(cfg, {"rna": _layout(30, 5)}).encoders["rna"].train(training)
    batch = SparseBatch.from_csr(
        sp.random(7, 30, density=0.3, format="csr", random_state=0, dtype=np.float32)
    )

    def full(e):
        tokens = e.embed(batch)
        x = e.drop(torch.cat([e.cls.expand(7, -1, -1), tokens], dim=1) + e.pos)
        for block in e.blocks:
            x = block(x)  # every token through every block
        return torch.nn.functional.normalize(e.proj(e.ln_f(x[:, 0])), dim=-1)

    fast = enc(batch)
    fast.pow(3).sum().backward()
    g_fast = {k: p.grad.clone() for k, p in enc.named_parameters() if p.grad is not None}
    enc.zero_grad()
    ref = full(enc)
    ref.pow(3).sum().backward()
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    for k, p in enc.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(
                g_fast[k], p.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=k: f"{n}: {m}"
            )


def _cpu(monkeypatch, capability: str, avx512_bf16: bool, amx: bool = False) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.mark.parametrize(
    ("capability", "avx512_bf16", "amx", "native"),
    [
        (
            "AVX2",
            True,
            False,
            False,
        ),  # torch dispatches AVX2 kernels: bf16 is emulated whatever the flags say
        ("DEFAULT", False, False, False),
        ("AVX512", False, False, False),  # AVX-512 without its bf16 extension (Skylake-X)
        ("AVX512", True, False, True),  # Zen 4, Cooper Lake
        ("AVX512", False, True, True),  # Sapphire Rapids (AMX)
    ],
)
def test_cpu_bf16_is_refused_without_native_bf16(monkeypatch, capability, avx512_bf16, amx, native):
    from scclip.model import check_cpu_bf16, cpu_capability, describe_cpu

    _cpu(monkeypatch, capability, avx512_bf16, amx)
    assert cpu_capability()["native_bf16"] is native
    assert describe_cpu().startswith(capability)
    check_cpu_bf16(torch.device("cuda"))  # never refused off the CPU (no GPU needed: only the device's type)
    if native:
        check_cpu_bf16(torch.device("cpu"))
        return
    with pytest.raises(ScclipError, match=f"capability {capability}.*--precision fp32") as err:
        check_cpu_bf16(torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_training_refuses_cpu_bf16_before_the_first_step(monkeypatch, tmp_path):
    from scclip.training import fit

    _cpu(monkeypatch, "AVX2", avx512_bf16=False)
    cfg = ModelConfig(
        d_model=8, n_layers=1, n_heads=2, d_ff=16, proj_dim=4, n_patches=2, embedding_init="random"
    )
    model = ScCLIP(cfg, {"rna": _layout(10, 2), "atac": _layout(12, 2)})
    X = {
        m: sp.random(20, n, density=0.3, format="csr", random_state=0, dtype=np.float32)
        for m, n in (("rna", 10), ("atac", 12))
    }
    kw = dict(train_idx=np.arange(16), val_idx=np.arange(16, 20), out_dir=tmp_path)
    with pytest.raises(ScclipError, match="native bf16"):
        fit(model, X["rna"], X["atac"], cfg=TrainConfig(precision="bf16", epochs=1, batch_size=8), **kw)
    assert not any(tmp_path.rglob("*.safetensors"))  # nothing trained or written
    fit(model, X["rna"], X["atac"], cfg=TrainConfig(precision="fp32", epochs=1, batch_size=8), **kw)


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward while ``fn`` runs."""
    seen: dict[int, int] = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("shape", [(37, 16), (3, 11, 16)])  # flat (jagged) tokens and a dense (B, T, d) batch
def test_feed_forward_recomputes_gelu_with_equal_outputs_and_gradients(shape):
    from scclip.model.encoder import Block, feed_forward

    torch.manual_seed(0)
    mlp = Block(ModelConfig(d_model=16, d_ff=48, n_heads=4, dropout=0.0)).mlp
    x = torch.randn(*shape, requires_grad=True)
    outs = {}
    for name, fn in (("plain", lambda: mlp(x)), ("recompute", lambda: feed_forward(mlp, x))):
        mlp.zero_grad(set_to_none=True)
        x.grad = None
        y = fn()
        y.pow(2).sum().backward()
        outs[name] = (y.detach(), x.grad.clone(), *(p.grad.clone() for p in mlp.parameters()))
    for got, want in zip(outs["recompute"], outs["plain"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    n = int(np.prod(shape[:-1]))
    plain, recompute = _saved_bytes(lambda: mlp(x)), _saved_bytes(lambda: feed_forward(mlp, x))
    assert plain - recompute == n * 48 * 4  # the (n, d_ff) fp32 GELU output is no longer kept
    with torch.no_grad():
        torch.testing.assert_close(feed_forward(mlp, x), mlp(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 autocast keeps the plain path
        assert _saved_bytes(lambda: feed_forward(mlp, x)) == _saved_bytes(lambda: mlp(x))
