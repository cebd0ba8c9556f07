"""GIST (Ruan et al., arXiv:2312.07255): a gist token and a bidirectional-KL "knowledge interaction" objective that
wraps any tuning method, as the authors' code (JCruan519/GIST) implements it.

* A trainable gist token (default length 1), initialised U(-0.5, 0.5) with dropout 0.1, is inserted after the
  position embedding, right after the class token, with no position embedding. It passes through every block and
  every module the method added, at training and at evaluation alike.
* The same head, after the final norm, gives gist logits ``z_g``; the class logits ``z_c`` are the model's own.
  Prediction uses ``z_c`` only.
* Loss: ``CE(z_c, y) + mu CE(z_g, y) + lam (KL(p_c || p_g) + KL(p_g || p_c))``, ``p = softmax(z / T)``, batch-mean
  KL, no T^2, nothing detached; defaults T = 3, mu = 0.5, lam = 0.75 (the code's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..families.t5 import lm_loss
from ..registry import OBJECTIVES
from .base import Objective, ObjectiveConfig


@OBJECTIVES.register("gist")
@dataclass(kw_only=True)
class GISTConfig(ObjectiveConfig):
    """GIST: a gist token whose logits join the loss, plus knowledge interaction between class and gist logits.

    Adds ``length x embed_dim`` trainable parameters (768 on ViT-B/16). ViT-like backbones only (the token joins the
    token sequence). Options cover the paper's ablations: token length (Table 6), each loss term (Table 7), the
    interaction loss (Table 8), and the section 3.1 variant where VPT's prompts feed the loss (``source=vpt``).

    Args:
        length: Number of gist tokens (their outputs are averaged before the head).
        temperature: Softmax temperature T of the interaction loss.
        mu: Weight of the gist cross-entropy ``CE(z_g, y)``; 0 turns the term off.
        lam: Weight of the interaction loss; 0 turns it off.
        ce_cls: Keep the class cross-entropy ``CE(z_c, y)``.
        interaction: ``bkl`` (both KL directions, GIST), ``fkl`` (``KL(p_c || p_g)`` only), ``rkl``
            (``KL(p_g || p_c)`` only), ``mse`` (mean squared error between the logits) or ``cos`` (1 - cosine
            similarity of the logits, batch mean). The paper does not say what its MSE and cosine read; logits here.
        t2: Multiply the KL terms by T^2 (Hinton's scaling; the authors' code does not).
        detach: Stop gradients through the target side of each KL term (the first argument), as plain distillation.
        dropout: Dropout on the gist token before it joins the sequence.
        cls_loss: The class term: ``ce`` (cross-entropy on the class logits, the paper's) or ``lm`` (T5, task
            text2text: ATTEMPT's loss, the gold label string's mean-token NLL, in its place; the gist and KL terms
            read the label-string scores as logits).
        source: ``gist`` (the gist token) or ``vpt`` (no new token: the mean of the method's VPT prompts gives the
            extra logits, the ``L_vpt`` of section 3.1; use with ``vpt_shallow`` or ``vpt_deep``).

    On a regression task (``regress``, ``text_regress``: one output, real targets) the paper's terms have no meaning
    (cross-entropy and a softmax over one output); vpeft's own definition is squared errors for the class and gist
    terms and the squared difference of the two predictions as the interaction (:func:`gist_regression_loss`).
    """

    length: int = 1
    temperature: float = 3.0
    mu: float = 0.5
    lam: float = 0.75
    ce_cls: bool = True
    interaction: Literal["bkl", "fkl", "rkl", "mse", "cos"] = "bkl"
    t2: bool = False
    detach: bool = False
    dropout: float = 0.1
    cls_loss: Literal["ce", "lm"] = "ce"
    source: Literal["gist", "vpt"] = "gist"

    changes_model: ClassVar[bool] = True  # the gist token joins the backbone's token sequence
    soft_labels: ClassVar[bool] = True  # both cross-entropies take class probabilities as well as indices

    def __post_init__(self):
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.mu < 0 or self.lam < 0:
            raise ValueError("mu and lam must be >= 0")
        if not (self.ce_cls or self.mu > 0 or self.lam > 0):
            raise ValueError("every loss term is off: keep ce_cls, or set mu or lam above 0")

    def attach(self, backbone) -> GISTObjective:
        name = type(backbone.model).__name__
        text = backbone.anatomy.token_sequence("embeddings") is not None  # BERT: after [CLS]; T5: first
        if self.cls_loss == "lm" and getattr(backbone.model, "label_lengths", None) is None:
            raise ConfigError("objective 'gist' with cls_loss=lm scores label strings: it needs a t5 backbone")
        if not text and (not backbone.is_vit or not backbone.has_class_token):
            raise ConfigError(
                f"objective 'gist' does not apply to {name}: the gist token joins a token sequence next to a class "
                "token, which only ViT-like backbones have (Swin and ConvNeXt pool feature maps)"
            )
        if self.source == "vpt":
            owners = [k for k in backbone.token_slots if k.startswith("vpt")]
            if not owners:
                raise ConfigError("objective 'gist' with source=vpt needs the method vpt_shallow or vpt_deep")
            slot = backbone.token_slots[owners[0]]
        else:
            token = GistToken(self.length, backbone.embed_dim, self.dropout)
            backbone.extras["gist"] = token
            start = backbone.num_prefix_tokens

            # Index 1 right after the class token; after a method's own prefix tokens (VPT prompts) if there are
            # any, so their places stay put. Neither has a position embedding, so the order changes nothing else.
            def insert(x):
                return torch.cat([x[:, :start], token(x.shape[0]), x[:, start:]], dim=1)

            where = "embeddings" if text else "post_norm_pre"
            backbone.register_token_hook(insert, self.length, owner="gist", where=where)
            slot = backbone.token_slots["gist"]
        obj = GISTObjective(self, slot)
        if getattr(backbone.model, "label_lengths", None) is not None:
            obj.own_definition = T5_DEFINITION
        elif text:
            obj.own_definition = ENCODER_DEFINITION
        elif type(backbone.head).__name__ == "ClipHead":
            obj.own_definition = CLIP_DEFINITION
        return obj


#: What result.json records where vpeft defines GIST itself (the paper defines it for ViTs only).
T5_DEFINITION = (
    "GIST on T5 is vpeft's own definition (the paper gives none): one token first in the encoder input, the mask "
    "grown; the gist logits are the decoder's scores of the label strings with the token's final encoder state as the "
    "only memory"
)
ENCODER_DEFINITION = (
    "GIST on a text encoder is vpeft's own definition (the paper gives none): one token right after [CLS], the mask "
    "grown; its final state goes through the shared head"
)
CLIP_DEFINITION = (
    "GIST on CLIP is vpeft's own definition (the paper gives none): one token after the class token (and MaPLe's "
    "prompts); its final state goes through ln_post, the projection and the same text classifier"
)
REGRESSION_DEFINITION = (
    "GIST on a regression task is vpeft's own definition: squared errors for the class and gist terms, the squared "
    "difference of the two predictions as the interaction"
)


class GistToken(nn.Module):
    def __init__(self, length: int, dim: int, dropout: float):
        super().__init__()
        self.gist_token = nn.Parameter(torch.empty(1, length, dim))
        self.drop = nn.Dropout(dropout)
        nn.init.uniform_(self.gist_token, -0.5, 0.5)

    def forward(self, batch: int) -> torch.Tensor:
        return self.drop(self.gist_token.expand(batch, -1, -1))


def kl(p_log_target: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` from log-probabilities, summed over classes, averaged over the batch."""
    return (p_log_target.exp() * (p_log_target - q_log)).sum(-1).mean()


def gist_regression_loss(z_cls, z_gist, targets, cfg: GISTConfig) -> dict[str, torch.Tensor]:
    """GIST on a regression task (one output, real targets: STS-B on an encoder), vpeft's own definition: the class
    and gist terms are squared errors against the targets, and the interaction is the squared difference of the two
    predictions (a softmax over one output is constant, so both KL terms would be zero whatever the predictions):
    ``MSE(z_c, y) + mu MSE(z_g, y) + lam MSE(z_c, z_g)``; ``interaction`` and ``temperature`` do not apply."""
    zero = z_cls.new_zeros(())
    zc, zg, y = z_cls.float().squeeze(-1), z_gist.float().squeeze(-1), targets.float()
    parts = {
        "ce_cls": F.mse_loss(zc, y) if cfg.ce_cls else zero,
        "ce_gist": F.mse_loss(zg, y) if cfg.mu > 0 else zero,
        "mse": F.mse_loss(zc, zg) if cfg.lam > 0 else zero,
    }
    return {"loss": parts["ce_cls"] + cfg.mu * parts["ce_gist"] + cfg.lam * parts["mse"], **parts}


def gist_loss(z_cls, z_gist, labels, cfg: GISTConfig) -> dict[str, torch.Tensor]:
    """The GIST loss and its parts from class and gist logits; ``labels``: class indices ``[B]`` or soft targets
    ``[B, C]``; real-valued targets ``[B]`` with one output: :func:`gist_regression_loss`."""
    if labels.is_floating_point() and labels.dim() == 1:
        return gist_regression_loss(z_cls, z_gist, labels, cfg)
    zero = z_cls.new_zeros(())
    parts = {
        "ce_cls": F.cross_entropy(z_cls, labels) if cfg.ce_cls else zero,
        "ce_gist": F.cross_entropy(z_gist, labels) if cfg.mu > 0 else zero,
        "kl_fwd": zero,
        "kl_rev": zero,
    }
    interaction = zero
    if cfg.lam > 0:
        T = cfg.temperature
        if cfg.interaction in ("bkl", "fkl", "rkl"):
            # The authors take the log of a softmax (not log_softmax); the two agree unless a probability underflows.
            lc, lg = F.log_softmax(z_cls / T, -1), F.log_softmax(z_gist / T, -1)
            tc, tg = (lc.detach(), lg.detach()) if cfg.detach else (lc, lg)
            scale = T * T if cfg.t2 else 1.0
            if cfg.interaction in ("bkl", "fkl"):
                parts["kl_fwd"] = kl(tc, lg) * scale  # KL(p_cls || p_gist)
            if cfg.interaction in ("bkl", "rkl"):
                parts["kl_rev"] = kl(tg, lc) * scale  # KL(p_gist || p_cls)
            interaction = parts["kl_fwd"] + parts["kl_rev"]
        elif cfg.interaction == "mse":
            parts["mse"] = interaction = F.mse_loss(z_cls, z_gist)
        else:
            parts["cos"] = interaction = (1 - F.cosine_similarity(z_cls, z_gist, dim=-1)).mean()
    loss = parts["ce_cls"] + cfg.mu * parts["ce_gist"] + cfg.lam * interaction
    return {"loss": loss, **parts}


class GISTObjective(Objective):
    def __init__(self, cfg: GISTConfig, slot: slice):
        super().__init__()
        self.cfg = cfg
        self.slot = slot
        self.own_definition: str | None = None

    def definitions(self, task) -> list[str]:
        """What of this GIST is vpeft's own definition on this backbone and ``task`` (recorded in result.json)."""
        out = [self.own_definition] if self.own_definition else []
        regression = getattr(task, "labels", None) == "float" and getattr(task, "outputs", None) == 1
        return out + ([REGRESSION_DEFINITION] if regression else [])

    def logits(self, model, images):
        feats = model.forward_features(images)
        z_cls = model.forward_head(feats)
        anatomy = model.anatomy
        # The gist token goes through the final norm (in forward_features for class-token models; fc_norm holds
        # it for avg-pool models) and the shared head.
        z_gist = anatomy.head(anatomy.pooled_features(feats[:, self.slot].mean(1)))
        return z_cls, z_gist

    def forward(self, model, images, labels):
        z_cls, z_gist = self.logits(model, images)
        out = gist_loss(z_cls, z_gist, labels, self.cfg)
        if self.cfg.cls_loss == "lm" and self.cfg.ce_cls:  # ATTEMPT's loss for the class term (T5)
            lm = lm_loss(z_cls, labels, model.model.label_lengths)
            out["loss"] = out["loss"] - out["ce_cls"] + lm
            out["ce_cls"] = lm
        parts = {k: v.detach() for k, v in out.items() if k != "loss"}
        return {"loss": out["loss"], "logits": z_cls, **parts}
