"""One modality's encoder: patch tokens + [CLS] + positions -> pre-LN Transformer -> shared space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from scclip.model.config import ModelConfig
from scclip.model.jagged import Jagged
from scclip.model.patch import PatchEmbedding, SparseBatch


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, cls_only: bool = False, layout: Jagged | None = None) -> torch.Tensor:
        """(B, T, d) -> (B, T, d); with ``cls_only`` only the first token's output (B, 1, d) is computed.
        With a jagged ``layout``: its slot buffer (S, d) -> (S, d), or (B, d) for [CLS] only (group order)."""
        if layout is not None:
            return self._jagged(x, cls_only, layout)
        B, T, d = x.shape
        h, dh = self.n_heads, d // self.n_heads
        if cls_only:  # queries of token 0 only; keys and values of all tokens
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :1], w[:d], b[:d]).view(B, 1, h, dh).transpose(1, 2)  # (B,h,1,dh)
            k, v = F.linear(x, w[d:], b[d:]).view(B, T, 2, h, dh).permute(2, 0, 3, 1, 4)  # (B,h,T,dh)
        else:
            q, k, v = self.qkv(x).view(B, T, 3, h, dh).permute(2, 0, 3, 1, 4)  # (B,h,T,dh)
        y = F.scaled_dot_product_attention(q, k, v)  # no attention dropout: keeps the fused kernel
        return self.out(y.transpose(1, 2).reshape(B, q.shape[2], d))  # (B,T,d) or (B,1,d)

    def _jagged(self, x: torch.Tensor, cls_only: bool, lay: Jagged) -> torch.Tensor:
        """Slot buffer (S, d) -> (S, d): projections on all slots, attention on each group's (b, K) view with
        its padding masked; with ``cls_only`` the [CLS] rows (B, d) in group order."""
        d, h = x.shape[1], self.n_heads  # x: (S, d)
        dh = d // h
        if cls_only:  # queries of [CLS] only (B, d); keys and values of all slots
            w, b = self.qkv.weight, self.qkv.bias
            qs = F.linear(lay.cls_rows(x), w[:d], b[:d]).split([g.n_cells for g in lay.groups])
            kvs = lay.split(F.linear(x, w[d:], b[d:]))  # per group (b, K, 2d)
        else:
            kvs = lay.split(self.qkv(x))  # per group (b, K, 3d)
        ys = []
        for i, (g, kv) in enumerate(zip(lay.groups, kvs, strict=True)):
            parts = kv.view(g.n_cells, g.length, -1, h, dh).permute(2, 0, 3, 1, 4)  # (2 or 3, b, h, K, dh)
            q, k, v = (qs[i].view(g.n_cells, h, 1, dh), *parts) if cls_only else parts
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=g.mask).transpose(1, 2)  # (b, Kq, h, dh)
            ys.append(y.reshape(-1, d))  # (b, d) or (b * K, d)
        return self.out(torch.cat(ys) if len(ys) > 1 else ys[0])  # (B, d) or (S, d)


class _GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)`` that saves only ``h``: the (..., d_ff) GELU output, the largest saved
    activation of a block, is recomputed in the backward (an elementwise op, ~1% of a step) instead of kept."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, weight)
        return F.linear(F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.shape[-1])  # (n, d)
        need_h, need_w, need_b = ctx.needs_input_grad
        grad_h = torch.ops.aten.gelu_backward(grad @ weight, h) if need_h else None  # (..., d_ff)
        grad_w = grad2.T @ F.gelu(h).reshape(-1, h.shape[-1]) if need_w else None  # GELU recomputed
        return grad_h, grad_w, grad2.sum(0) if need_b else None


def feed_forward(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``mlp(x)`` of a block's ``Linear, GELU, Linear, Dropout``; in fp32 training the GELU output is not kept
    for the backward (:class:`_GeluLinear`: equal outputs and gradients, less memory)."""
    up, _, down, drop = mlp
    h = up(x)  # (..., d_ff)
    if torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type) and h.requires_grad:
        return drop(_GeluLinear.apply(h, down.weight, down.bias))
    return mlp[1:](h)


class Block(nn.Module):
    """Pre-LN Transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff),
            nn.GELU(),
            nn.Linear(cfg.d_ff, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cls_only: bool = False, layout: Jagged | None = None) -> torch.Tensor:
        """(B, T, d) -> (B, T, d), or only the [CLS] token (B, 1, d) when ``cls_only`` (the last block: the
        encoder reads nothing else, so the other tokens' queries, output projection and MLP are skipped).
        With a jagged ``layout`` (empty patches skipped): slots (S, d) -> (S, d), or (B, d) in group order."""
        y = self.attn(self.ln1(x), cls_only=cls_only, layout=layout)
        if cls_only:
            x = x[:, :1] if layout is None else layout.cls_rows(x)  # (B, 1, d) or (B, d)
        x = x + self.drop(y)
        return x + feed_forward(self.mlp, self.ln2(x))


class ModalityEncoder(nn.Module):
    """Sparse cells of one modality -> L2-normalised embeddings (B, proj_dim).

    Parameters
    ----------
    cfg
        Architecture.
    patch, offset, n_patches, patch_size
        Patch layout of this modality's feature space.

    Attributes
    ----------
    checkpoint_blocks
        Activation checkpointing in training: keep only each block's input and recompute the block in the
        backward pass (less memory, ~1/3 more compute, identical outputs and gradients).
    """

    checkpoint_blocks: bool = False

    def __init__(self, cfg: ModelConfig, *, patch, offset, n_patches: int, patch_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = PatchEmbedding(
            patch,
            offset,
            n_patches=n_patches,
            patch_size=patch_size,
            d_model=cfg.d_model,
            mode=cfg.patch_embedding,
        )
        if cfg.freeze_embedding and cfg.embedding_init == "svd" and cfg.patch_embedding == "per_patch":
            self.embed.weight.requires_grad_(
                False
            )  # fixed PCA/LSI loadings (see ModelConfig.freeze_embedding)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, cfg.d_model) * 0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.proj_dim, bias=False)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        """(B, proj_dim) unit embeddings; with ``cfg.skip_empty_patches`` only [CLS] and the non-empty
        patches' tokens enter the Transformer (a :class:`~scclip.model.jagged.Jagged` layout)."""
        if self.training:
            batch = batch.dropout(self.cfg.feature_dropout)
        x = self.tokens(batch)  # (B, P+1, d)
        layout = None
        if self.cfg.skip_empty_patches:
            keep = self.keep_mask(batch)  # (B, P+1)
            layout = Jagged.from_keep(keep)
            x = layout.gather(x)  # (S, d): the non-empty tokens, each group padded to its largest count
        return self.transform(self.drop(x), layout)

    def tokens(self, batch: SparseBatch) -> torch.Tensor:
        """(B, P+1, d): [CLS] and the patch tokens, positions added."""
        tokens = self.embed(batch)  # (B, P, d)
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (B, P+1, d)
        return x + self.pos

    def keep_mask(self, batch: SparseBatch) -> torch.Tensor:
        """(B, P+1) bool: [CLS] and every patch with a non-zero feature in the cell."""
        occupied = self.embed.occupied(batch)  # (B, P)
        return torch.cat([occupied.new_ones(batch.n_cells, 1), occupied], dim=1)

    def transform(self, x: torch.Tensor, layout: Jagged | None = None) -> torch.Tensor:
        """Tokens (B, T, d), or the slot buffer (S, d) of a jagged ``layout``, through the blocks -> (B, proj_dim)
        unit embeddings from [CLS], in batch order."""
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1  # only [CLS] leaves the last block: (B, 1, d) or (B, d)
            x = (
                checkpoint(block, x, last, layout, use_reentrant=False)
                if recompute
                else block(x, last, layout)
            )  # (B, T, d) or (S, d)
        z = self.proj(self.ln_f(x[:, 0] if layout is None else layout.to_batch_order(x)))  # (B, proj_dim)
        return F.normalize(z.float(), dim=-1)
