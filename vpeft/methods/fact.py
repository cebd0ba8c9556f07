"""FacT: factor-tuning (Jie & Deng, arXiv:2212.03145), tensor-train (``fact_tt``) and Tucker (``fact_tk``) forms,
as in PETL-ViT's ``FacT/fact_tt.py`` and ``fact_tk.py``.

The weight updates of all blocks are seen as one tensor of 12L d x d slices (per block: q, k, v, o, fc1 as 4 slices,
fc2 as 4 slices) factorised with shared U (d -> r, trainable) and V (r -> d, zero-initialised):

* FacT-TT: per block, r x r cores for q, k, v, o, an r -> 4r core for fc1 and a 4r -> r core for fc2
  (PyTorch's default Linear init). Parameters: ``2 d r + 12 L r^2`` (ViT-B/16, r = 8: 21,504).
* FacT-TK: a shared core C (r x r x r) and P (r x 12L), both xavier-uniform; slice j's core is ``C @ P[:, j]``.
  Parameters: ``2 d r + 12 L r + r^3`` (ViT-B/16, r = 8: 13,952).

The update of each slice is ``s * V dropout(core(U x))``; dropout 0.1 as the authors. The cores are built once per
forward pass (when block 0 is entered, on first use) rather than in every layer's hook, and ``U x`` once per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import METHODS
from .base import MethodConfig


@dataclass(frozen=True)
class _BlockSites:
    """A block's FacT sites: q, k, v grouped by the Linear that computes them (one group for a fused qkv, in q, k, v
    order), then o, fc1 and fc2."""

    qkv: list[tuple[nn.Linear, list[str]]]
    o: nn.Linear
    fc1: nn.Linear
    fc2: nn.Linear


def _block_sites(backbone, name: str) -> tuple[list[_BlockSites], int]:
    """Every block's sites and the common width d, or a clear refusal."""
    anatomy = backbone.anatomy
    blocks = anatomy.blocks
    d = anatomy.width(blocks[0])
    need = (
        "; FacT stacks every block's weights into one tensor, so it needs transformer blocks of one width d "
        "with d x d attention projections and a 4d Linear MLP"
    )
    out = []
    for b in blocks:
        attn, mlp = anatomy.attention(b), anatomy.mlp(b)
        if attn is None:
            raise anatomy.refuse(f"method {name!r}", "attention", b, need)
        ok = (
            mlp is not None
            and not mlp.channels_first
            and anatomy.width(b) == d
            and all(s.layer.in_features == d and s.out.stop - s.out.start == d for s in attn.values())
            and isinstance(mlp.fc1, nn.Linear)
            and mlp.fc1.in_features == d
            and mlp.fc1.out_features == 4 * d
            and isinstance(mlp.fc2, nn.Linear)
            and mlp.fc2.in_features == 4 * d
            and mlp.fc2.out_features == d
        )
        groups: list[tuple[nn.Linear, list[str]]] = []
        for t in "qkv":
            if groups and groups[-1][0] is attn[t].layer:
                groups[-1][1].append(t)
            else:
                groups.append((attn[t].layer, [t]))
        # each layer's slices must tile its output in order, so the updates concatenate into it
        ok = ok and all(
            [attn[t].out for t in kinds] == [slice(i * d, (i + 1) * d) for i in range(len(kinds))]
            and layer.out_features == len(kinds) * d
            for layer, kinds in groups
        )
        if not ok:
            raise ConfigError(
                f"method {name!r} does not apply to {anatomy.name}: its {type(b).__name__} does not fit{need}"
            )
        out.append(_BlockSites(groups, attn["o"].layer, mlp.fc1, mlp.fc2))
    return out, d


class FacTShared(nn.Module):
    def __init__(self, d: int, r: int, blocks: int, tucker: bool, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fact_u = nn.Linear(d, r, bias=False)
        self.fact_v = nn.Linear(r, d, bias=False)
        nn.init.zeros_(self.fact_v.weight)
        self.tucker = tucker
        if tucker:
            self.fact_c = nn.Parameter(torch.empty(r, r, r))
            self.fact_p = nn.Parameter(torch.empty(r, 12 * blocks))
            nn.init.xavier_uniform_(self.fact_c)
            nn.init.xavier_uniform_(self.fact_p)
        else:
            self.cores = nn.ModuleList(
                nn.ModuleDict(
                    {
                        "q": nn.Linear(r, r, bias=False),
                        "k": nn.Linear(r, r, bias=False),
                        "v": nn.Linear(r, r, bias=False),
                        "o": nn.Linear(r, r, bias=False),
                        "fc1": nn.Linear(r, 4 * r, bias=False),
                        "fc2": nn.Linear(4 * r, r, bias=False),
                    }
                )
                for _ in range(blocks)
            )
        self.r = r
        self.num_blocks = blocks
        self._forward_cores: list[dict[str, torch.Tensor]] | None = None

    def block_cores(self, block: int) -> dict[str, torch.Tensor]:
        """A block's cores as matrices acting on row vectors, ``h @ core``: r x r (q, k, v, o), r x 4r (fc1) and
        4r x r (fc2)."""
        if not self.tucker:
            return {kind: lin.weight.t() for kind, lin in self.cores[block].items()}
        r = self.r
        attn = self.fact_c @ self.fact_p[:, 12 * block : 12 * block + 4]  # r x r x 4
        mlp = self.fact_c @ self.fact_p[:, 12 * block + 4 : 12 * block + 12]  # r x r x 8
        out = {kind: attn[:, :, j] for j, kind in enumerate("qkvo")}
        out["fc1"] = mlp[:, :, :4].reshape(r, 4 * r)
        out["fc2"] = mlp[:, :, 4:].reshape(r, 4 * r).t()
        return out

    def forward_cores(self) -> list[dict[str, torch.Tensor]]:
        """Every block's cores for the running forward pass: built on first use, dropped by :meth:`end_forward`."""
        if self._forward_cores is None:
            self._forward_cores = [self.block_cores(i) for i in range(self.num_blocks)]
        return self._forward_cores

    def end_forward(self) -> None:
        self._forward_cores = None

    def delta_weights(self, block: int, scale: float) -> dict[str, torch.Tensor]:
        """Dense weight updates (out x in) of a fused qkv (q, k, v rows in order), proj, fc1 and fc2 for merging."""
        u, v, r = self.fact_u.weight, self.fact_v.weight, self.r  # r x d, d x r
        cores = self.block_cores(block)
        out = {
            "qkv": torch.cat([v @ cores[t].t() @ u for t in "qkv"], 0),
            "proj": v @ cores["o"].t() @ u,
        }
        c1 = cores["fc1"]  # r x 4r: slice j uses columns j*r:(j+1)*r
        out["fc1"] = torch.cat([v @ c1[:, j * r : (j + 1) * r].t() @ u for j in range(4)], 0)
        c2 = cores["fc2"]  # 4r x r: slice j uses rows j*r:(j+1)*r
        out["fc2"] = torch.cat([v @ c2[j * r : (j + 1) * r].t() @ u for j in range(4)], 1)
        return {k: w * scale for k, w in out.items()}


@dataclass(kw_only=True)
class _FacTBase(MethodConfig):
    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.1

    tucker: ClassVar[bool] = False
    identity_init: ClassVar[bool] = True
    mergeable: ClassVar[bool] = True
    test_overrides: ClassVar[dict] = {"rank": 2}

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")

    def inject(self, backbone) -> None:
        sites, d = _block_sites(backbone, self.name)
        blocks = backbone.anatomy.blocks
        shared = FacTShared(d, self.rank, len(blocks), self.tucker, self.dropout)
        backbone.extras[self.name] = shared
        drop = shared.drop
        s, r = self.scale, self.rank

        def scaled(t):
            return t * s if s != 1 else t

        def upd(h, core):  # s * V(dropout(U(x) @ core))
            return scaled(shared.fact_v(drop(h @ core)))

        def qkv(x, y, i, kinds):  # the updates of the q, k, v slices this layer computes, in order
            h, cores = shared.fact_u(x), shared.forward_cores()[i]
            return y + torch.cat([upd(h, cores[t]) for t in kinds], -1)

        def proj(x, y, i):
            return y + upd(shared.fact_u(x), shared.forward_cores()[i]["o"])

        def fc1(x, y, i):
            h = drop(shared.fact_u(x) @ shared.forward_cores()[i]["fc1"])  # B N 4r
            return y + scaled(shared.fact_v(h.unflatten(-1, (4, r)))).flatten(-2)

        def fc2(x, y, i):
            h = shared.fact_u(x.unflatten(-1, (4, d))).flatten(-2)  # B N 4r
            return y + upd(h, shared.forward_cores()[i]["fc2"])

        # A forward pass starts at block 0 and ends after the last block: the cores of the previous pass (maybe from
        # before an optimizer step, or built without autograd) are never reused.
        backbone.register_module_hook(blocks[0], pre=lambda x: shared.end_forward())
        for i, site in enumerate(sites):
            for layer, kinds in site.qkv:
                backbone.register_module_hook(layer, post=lambda x, y, i=i, k=kinds: qkv(x, y, i, k))
            backbone.register_module_hook(site.o, post=lambda x, y, i=i: proj(x, y, i))
            backbone.register_module_hook(site.fc1, post=lambda x, y, i=i: fc1(x, y, i))
            backbone.register_module_hook(site.fc2, post=lambda x, y, i=i: fc2(x, y, i))
        backbone.register_module_hook(blocks[-1], post=lambda x, y: shared.end_forward())

    def extra_trainable_count(self, backbone) -> int:
        anatomy = backbone.anatomy
        L, d, r = len(anatomy.blocks), anatomy.width(anatomy.blocks[0]), self.rank
        if self.tucker:
            return 2 * d * r + 12 * L * r + r**3
        return 2 * d * r + 12 * L * r * r

    def merge(self, backbone) -> None:
        shared = backbone.extras[self.name]
        sites, d = _block_sites(backbone, self.name)
        with torch.no_grad():
            for i, site in enumerate(sites):
                deltas = shared.delta_weights(i, self.scale)
                for layer, kinds in site.qkv:  # each layer's rows of the q, k, v update
                    rows = [deltas["qkv"]["qkv".index(t) * d : ("qkv".index(t) + 1) * d] for t in kinds]
                    layer.weight += torch.cat(rows, 0).to(layer.weight.dtype)
                for layer, key in ((site.o, "proj"), (site.fc1, "fc1"), (site.fc2, "fc2")):
                    layer.weight += deltas[key].to(layer.weight.dtype)


@METHODS.register("fact_tt")
@dataclass(kw_only=True)
class FacTTTConfig(_FacTBase):
    """FacT-TT: shared U, V and per-block tensor-train cores; ``2 d r + 12 L r^2`` parameters (21,504 on ViT-B/16
    with r = 8). ViT-like backbones only. Mergeable.

    Args:
        rank: Rank r of the factorisation (8 for most VTAB tasks in the FacT configs).
        scale: Scale s of the update (per task in the FacT configs: 0.1 to 100).
        dropout: Dropout on the core's output.
    """


@METHODS.register("fact_tk")
@dataclass(kw_only=True)
class FacTTKConfig(_FacTBase):
    """FacT-TK: shared U, V, a Tucker core C (r x r x r) and per-slice factors P (r x 12L);
    ``2 d r + 12 L r + r^3`` parameters (13,952 on ViT-B/16 with r = 8). ViT-like backbones only. Mergeable.

    Args:
        rank: Rank r of the factorisation.
        scale: Scale s of the update.
        dropout: Dropout on the core's output.
    """

    tucker: ClassVar[bool] = True
