"""The policy: a small causal transformer in plain PyTorch, dense or Mixture-of-Experts.

Reads top to bottom: config, attention, feed-forward (dense ``MLP`` or routed ``MoE``), block, model.
The MoE layer computes every expert on every token and mixes the top-k of them: at this size that is
cheaper than gathering tokens per expert, and it keeps the computation deterministic on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ModelConfig", "ModelOutput", "Policy"]


@dataclass
class ModelConfig:
    vocab_size: int = 16
    block_size: int = 32  # longest prompt + response the model will see
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    moe: bool = False
    n_experts: int = 4
    top_k: int = 2
    # Std of the Gaussian noise added to router logits when a forward asks for it (``router_noise=True``).
    router_noise: float = 0.0


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, S, V]
    experts: torch.Tensor | None  # [L, B, S, k] chosen expert ids per MoE layer, None for a dense model


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (t.view(b, s, self.n_head, c // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, s, c))


class MLP(nn.Module):
    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class MoE(nn.Module):
    """Top-k routed experts. Returns the mixed output and the chosen expert ids [B, S, k]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.top_k = cfg.top_k
        self.noise_std = cfg.router_noise
        self.router = nn.Linear(cfg.n_embd, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(cfg.n_embd) for _ in range(cfg.n_experts))

    def forward(
        self, x: torch.Tensor, *, noise: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.router(x)  # [B, S, E]
        if noise and self.noise_std > 0:
            eps = torch.randn(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
            logits = logits + self.noise_std * eps
        top_val, top_idx = logits.topk(self.top_k, dim=-1)  # [B, S, k]
        gates = torch.zeros_like(logits).scatter(-1, top_idx, F.softmax(top_val, dim=-1))
        outs = torch.stack([e(x) for e in self.experts], dim=-1)  # [B, S, C, E]
        return (outs * gates.unsqueeze(-2)).sum(-1), top_idx


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.ffn: nn.Module = MoE(cfg) if cfg.moe else MLP(cfg.n_embd)

    def forward(
        self, x: torch.Tensor, *, noise: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x + self.attn(self.ln1(x))
        if isinstance(self.ffn, MoE):
            y, experts = self.ffn(self.ln2(x), noise=noise, generator=generator)
            return x + y, experts
        return x + self.ffn(self.ln2(x)), None


class Policy(nn.Module):
    """Token and position embeddings, ``n_layer`` blocks, a final norm and a tied output head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's scale at depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: torch.Tensor,
        *,
        router_noise: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelOutput:
        """Logits for every position of ``idx`` [B, S]; ``router_noise`` perturbs MoE routing."""
        _, s = idx.shape
        if s > self.cfg.block_size:
            raise ValueError(f"sequence of {s} tokens exceeds block_size={self.cfg.block_size}")
        x = self.tok(idx) + self.pos(torch.arange(s, device=idx.device))
        chosen = []
        for block in self.blocks:
            x, experts = block(x, noise=router_noise, generator=generator)
            if experts is not None:
                chosen.append(experts)
        logits = F.linear(self.ln_f(x), self.tok.weight)
        return ModelOutput(logits=logits, experts=torch.stack(chosen) if chosen else None)
