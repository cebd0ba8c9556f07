"""The ``sam`` backbone family (issue 18): SAM's image encoder (timm's samvit) with SAM's mask decoder as the head.

Checked here: the model's output equals segment-anything's own ``Sam`` on the same weights; an official checkpoint
loads whole (the prompt encoder's no-mask embedding and position encoding included), and a missing, unexpected or
misshapen tensor is named; the counts of SAM ViT-B and of every method on it, computed by hand from the architecture
(meta device); GPS on SAM: its sites are the image encoder's, the per-row rule on a gradient of the task's loss, and
the paper's 4,227,044 trainable parameters.
"""

import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, tiny_sam_reference

from vpeft import METHODS, apply_method, create_backbone
from vpeft.cli import main
from vpeft.data.loader import DeviceData
from vpeft.data.vtab import ImageDataset, normalize
from vpeft.errors import CheckpointError, ConfigError
from vpeft.families.sam import SamMaskHead, official_state_dict
from vpeft.methods.base import count_params, head_param_names
from vpeft.selectors.gps import GPSConfig, weight_sites

REASON = "the sam family needs segment-anything (pip install 'vpeft[sam]')"


@pytest.fixture
def sa():
    return pytest.importorskip("segment_anything", reason=REASON)


# ---- SAM ViT-B by hand -----------------------------------------------------------------------------------------------
D, L, MLP, P, GRID = 768, 12, 3072, 256, 64  # encoder width, depth, MLP width; prompt width; 1024 / 16
BLOCK = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * MLP + MLP) + (MLP * D + D)  # norms, qkv, proj, MLP
BLOCK_OUT = D + 3 * D + D + D + MLP + D  # per block, the biases of norm1, qkv, proj, norm2, fc1, fc2
REL_POS = 8 * 2 * (2 * 14 - 1) * 64 + 4 * 2 * (2 * GRID - 1) * 64  # 8 windowed blocks (14), 4 global; head dim 64
NECK = D * P + 2 * P + P * P * 9 + 2 * P  # 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d; no conv bias
ENCODER = (3 * 16 * 16 * D + D) + GRID * GRID * D + L * BLOCK + REL_POS + NECK
LIN = lambda i, o: i * o + o  # noqa: E731


def _attention(dim, downsample=1):  # segment-anything's Attention: q, k, v to dim / downsample, out back to dim
    inner = dim // downsample
    return 3 * LIN(dim, inner) + LIN(inner, dim)


TWO_WAY_BLOCK = _attention(P) + 2 * _attention(P, 2) + LIN(P, 2048) + LIN(2048, P) + 4 * 2 * P
TRANSFORMER = 2 * TWO_WAY_BLOCK + _attention(P, 2) + 2 * P  # two blocks, the final token-to-image attention, norm
UPSCALING = (P * (P // 4) * 4 + P // 4) + 2 * (P // 4) + ((P // 4) * (P // 8) * 4 + P // 8)  # 2x2 deconvs, LN2d
HYPER = 4 * (2 * LIN(P, P) + LIN(P, P // 8))  # one 3-layer MLP per mask token
IOU_HEAD = 2 * LIN(P, P) + LIN(P, 4)
DECODER = TRANSFORMER + P + 4 * P + UPSCALING + HYPER + IOU_HEAD  # + the IoU token and the 4 mask tokens
MASK_DOWNSCALING = LIN(1 * 4, 4) + 2 * 4 + LIN(4 * 4, 16) + 2 * 16 + LIN(16, P)  # 2x2 convs (4 taps), LN2d, 1x1
PROMPT_ENCODER = 4 * P + P + MASK_DOWNSCALING + P  # point embeddings, not-a-point, mask input, no-mask embedding
HEAD = DECODER + P  # what every method trains: the mask decoder and no_mask_embed
ADAPTER = L * (2 * D * 4 + 4 + D)  # the default adapter: dim 4 with biases, one per block
NO_TOKENS = (
    "does not apply to VisionTransformerSAM: its tokens are a windowed \\[B,H,W,C\\] grid, there is no token "
    "sequence to insert into"
)
#: Trainable parameters of each method on sam:vit_b, the head included (Table 5's Linear 4.06, Bias 4.16, Adapter
#: 4.12 with dim 3, SSF 4.26, Full 93.8).
METHOD_COUNTS = {
    "linear": HEAD,
    "bitfit": HEAD + L * BLOCK_OUT + D + 2 * P,  # block biases (norms too), patch embedding, the neck's LayerNorm2d
    "full": HEAD + ENCODER,
    "adapter": HEAD + ADAPTER,
    "ssf": HEAD + 2 * (D + L * BLOCK_OUT),  # patch embedding and every block layer; the neck has no ssf site
    "lora": HEAD + L * 2 * (8 * D + D * 8),  # rank 8 on q and v
    "vpt_shallow": "method 'vpt_shallow' " + NO_TOKENS,
    "vpt_deep": "method 'vpt_deep' " + NO_TOKENS,
}
#: GPS at k = 1: one entry per output row of every Linear and Conv2d of the encoder (patch embedding, qkv, proj, fc1,
#: fc2, the neck's two convolutions), and the non-norm biases plus the neck's LayerNorm2d biases.
GPS_ROWS = L * (3 * D + D + MLP + D) + D + P + P
GPS_BIASES = L * (3 * D + D + MLP + D) + D + 2 * P


def test_the_hand_counts_are_sams(sa):
    """The official SAM ViT-B (segment-anything, meta device) has the counts computed above."""
    with torch.device("meta"):
        ref = sa.sam_model_registry["vit_b"]()
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (n(ref.image_encoder), n(ref.mask_decoder), n(ref.prompt_encoder)) == (ENCODER, DECODER, PROMPT_ENCODER)
    assert (ENCODER, DECODER, PROMPT_ENCODER, n(ref)) == (89_670_912, 4_058_340, 6_220, 93_735_472)
    assert (HEAD, METHOD_COUNTS["bitfit"], GPS_ROWS, GPS_BIASES) == (4_058_596, 4_161_252, 84_224, 84_224)


def _vit_b():
    with torch.device("meta"):
        return create_backbone("sam:vit_b", num_classes=1)


def test_sam_vit_b_structure(sa):
    bb = _vit_b()
    # The model holds the encoder, the decoder and, of the prompt encoder, the no-mask embedding (prompt mode none).
    assert sum(p.numel() for p in bb.parameters()) == ENCODER + HEAD == 93_735_472 - (PROMPT_ENCODER - P)
    assert isinstance(bb.head, SamMaskHead) and bb.head is bb.model.head and bb.num_classes == 1
    assert sum(p.numel() for p in bb.head.parameters()) == HEAD
    assert bb.input_size == (1024, 1024) and bb.anatomy.input_spec.mean == (0.485, 0.456, 0.406)
    assert bb.anatomy.patch_grid() == (64, 64) and len(bb.blocks) == L
    assert bb.head.pe_layer.positional_encoding_gaussian_matrix.shape == (2, P // 2)


@pytest.mark.parametrize("name", sorted(METHOD_COUNTS))
def test_methods_on_sam_vit_b(sa, name):
    expected = METHOD_COUNTS[name]
    bb = _vit_b()
    cfg = METHODS.get(name)()
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            apply_method(bb, cfg)
        return
    apply_method(bb, cfg)
    assert count_params(bb) == expected
    assert count_params(bb, exclude=head_param_names(bb)) == cfg.extra_trainable_count(bb) == expected - HEAD
    assert all(p.requires_grad for p in bb.head.parameters())


@pytest.mark.parametrize(
    "norm_bias, biases", [("outside_blocks", GPS_BIASES), ("none", GPS_BIASES - 2 * P), ("all", GPS_BIASES + L * 2 * D)]
)
def test_gps_on_sam_vit_b(sa, norm_bias, biases):
    """GPS's sites are the image encoder's layers (the decoder is the head and trains fully); with the neck's
    LayerNorm2d biases (``norm_bias=outside_blocks``, as GPS's SAM code) the paper's 4,227,044 trainable."""
    bb = _vit_b()
    apply_method(bb, "linear")
    sel = GPSConfig(loss="task", norm_bias=norm_bias)
    with torch.device("meta"):
        state = sel.structure_only(bb)
        sel.apply(bb, state)
    sites = weight_sites(bb)
    assert sum(m.weight.shape[0] for m in sites.values()) == GPS_ROWS == sel.count(state)
    assert not any(n.startswith("head.") for n in sites) and {"neck.0", "neck.2", "patch_embed.proj"} <= set(sites)
    assert count_params(bb) == HEAD + GPS_ROWS + biases
    if norm_bias == "outside_blocks":
        assert count_params(bb) == 4_227_044
    frozen = {n for n, p in bb.model.named_parameters() if not p.requires_grad}
    assert {"pos_embed", "blocks.0.attn.rel_pos_h", "blocks.0.attn.rel_pos_w", "neck.1.weight"} <= frozen
    assert ("neck.1.bias" in frozen, "blocks.0.norm1.bias" in frozen) == (norm_bias == "none", norm_bias != "all")


# ---- official checkpoints --------------------------------------------------------------------------------------------
def test_an_official_vit_b_checkpoint_maps_onto_sam_vit_b(sa):
    """Every tensor of segment-anything's ViT-B state dict has its place, but the prompt encoder's point, box and
    mask-input embeddings, which prompt mode none does not use."""
    with torch.device("meta"):
        ref = sa.sam_model_registry["vit_b"]().state_dict()
    bb = _vit_b()
    mapped = official_state_dict(ref, bb.model)
    assert mapped.keys() == bb.model.state_dict().keys()
    assert mapped["blocks.3.mlp.fc1.weight"] is ref["image_encoder.blocks.3.mlp.lin1.weight"]
    assert mapped["head.no_mask_embed.weight"] is ref["prompt_encoder.no_mask_embed.weight"]
    pe = "pe_layer.positional_encoding_gaussian_matrix"
    assert mapped[f"head.{pe}"] is ref[f"prompt_encoder.{pe}"]
    unused = {k for k in ref if k.startswith("prompt_encoder.")} - {
        f"prompt_encoder.{pe}",
        "prompt_encoder.no_mask_embed.weight",
    }
    assert len(unused) == 15 and all(
        k.split(".")[1] in ("point_embeddings", "not_a_point_embed", "mask_downscaling") for k in unused
    )


@pytest.fixture
def tiny_checkpoint(sa, tmp_path):
    ref = tiny_sam_reference(seed=0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def test_sam_tiny_equals_segment_anything_on_the_same_weights(sa, tiny_checkpoint):
    """The official checkpoint's weights, loaded through timm's mapping and the head, give segment-anything's own
    prediction (no prompt, one mask, upsampled to the input) for every image of a batch."""
    ref, path = tiny_checkpoint
    torch.manual_seed(1)
    bb = create_backbone("sam:tiny", num_classes=1, checkpoint=path).eval()
    sd = ref.state_dict()
    head = bb.head
    torch.testing.assert_close(head.no_mask_embed.weight, sd["prompt_encoder.no_mask_embed.weight"], rtol=0, atol=0)
    pe = "pe_layer.positional_encoding_gaussian_matrix"
    torch.testing.assert_close(getattr(head.pe_layer, pe.split(".")[1]), sd[f"prompt_encoder.{pe}"], rtol=0, atol=0)
    pixels = (torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 255).round()
    with torch.no_grad():  # segment-anything normalises 0-255 pixels itself, one image at a time
        outs = ref([{"image": im, "original_size": (64, 64)} for im in pixels], multimask_output=False)
        want = torch.cat([ref.postprocess_masks(o["low_res_logits"], (64, 64), (64, 64)) for o in outs])
        got = bb(normalize(pixels.to(torch.uint8), "imagenet"))
    assert got.shape == (3, 1, 64, 64) and want.abs().max() > 1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("mask_decoder.iou_token.weight"), r"missing: mask_decoder\.iou_token\.weight \(1\)"),
        (
            lambda sd: sd.pop("image_encoder.blocks.1.mlp.lin2.bias"),
            r"missing: image_encoder\.blocks\.1\.mlp\.lin2\.bias",
        ),
        (lambda sd: sd.pop("prompt_encoder.no_mask_embed.weight"), r"missing: prompt_encoder\.no_mask_embed\.weight"),
        (
            lambda sd: sd.pop("prompt_encoder.point_embeddings.2.weight"),
            r"missing: prompt_encoder\.point_embeddings\.2",
        ),
        (lambda sd: sd.update(extra=torch.zeros(1)), r"unexpected: extra \(1\)"),
        (lambda sd: sd.update({"prompt_encoder.extra.weight": torch.zeros(1)}), r"unexpected: prompt_encoder\.extra"),
        (lambda sd: sd.update({"mask_decoder.extra": torch.zeros(1)}), r"unexpected: mask_decoder\.extra"),
        (
            lambda sd: sd.update({"mask_decoder.iou_token.weight": torch.zeros(1, 31)}),
            r"shape mismatch: mask_decoder\.iou_token\.weight \(1, 31\) vs \(1, 32\)",
        ),
    ],
)
def test_a_checkpoint_that_does_not_match_names_the_tensor(tiny_checkpoint, tmp_path, edit, message):
    ref, _ = tiny_checkpoint
    sd = dict(ref.state_dict())
    edit(sd)
    path = tmp_path / "edited.pth"
    torch.save(sd, path)
    with pytest.raises(
        CheckpointError, match=rf"checkpoint .*edited\.pth does not match the backbone \(SAM, .*{message}"
    ):
        create_backbone("sam:tiny", num_classes=1, checkpoint=path)


def test_a_classifier_checkpoint_is_not_a_sam_checkpoint(sa, tmp_path):
    path = tmp_path / "vit.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(32, 3, 8, 8)}, path)
    with pytest.raises(CheckpointError, match=r"holds no image_encoder\.\* tensors: it is not an official SAM"):
        create_backbone("sam:tiny", num_classes=1, checkpoint=path)


# ---- the spec, the package, the head ---------------------------------------------------------------------------------
def test_sam_specs_and_refusals(sa):
    with pytest.raises(ConfigError, match=r"unknown sam backbone 'vit_x' \(valid: vit_b, vit_l, vit_h, tiny\)"):
        create_backbone("sam:vit_x", num_classes=1)
    with pytest.raises(ConfigError, match=r"unknown sam prompt 'boxes' \(valid: none, box, points\)"):
        create_backbone("sam:tiny:prompt=boxes", num_classes=1)
    with pytest.raises(ConfigError, match=r"its head has 1 output, not 3"):
        create_backbone("sam:tiny", num_classes=3)
    with pytest.raises(
        ConfigError, match=r"^the sam family has no hub weights for the whole model .* --checkpoint FILE$"
    ):
        create_backbone("sam:tiny", num_classes=1, pretrained=True)
    bb = create_backbone("sam:tiny:img_size=32,decoder_depth=1", num_classes=1)
    assert bb.input_size == (32, 32) and len(bb.head.mask_decoder.transformer.layers) == 1
    assert bb(torch.randn(2, 3, 32, 32)).shape == (2, 1, 32, 32)


def test_without_segment_anything_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    monkeypatch.setitem(sys.modules, "segment_anything.modeling", None)
    with pytest.raises(
        ConfigError,
        match=r"^the sam backbone family needs the segment-anything "
        r"package: pip install 'vpeft\[sam\]'$",
    ):
        create_backbone("sam:tiny", num_classes=1)


def test_list_backbones_names_the_sam_models(capsys):
    assert main(["list", "backbones"]) == 0
    assert "sam:vit_b, sam:vit_l, sam:vit_h, sam:tiny: Segment Anything" in capsys.readouterr().out


# ---- sam:tiny trains -------------------------------------------------------------------------------------------------
#: Decoder tensors that the single-mask output does not reach: the other three mask tokens' MLPs and the IoU head.
UNUSED = (
    "model.head.mask_decoder.output_hypernetworks_mlps.1.",
    "model.head.mask_decoder.output_hypernetworks_mlps.2.",
    "model.head.mask_decoder.output_hypernetworks_mlps.3.",
    "model.head.mask_decoder.iou_prediction_head.",
)


def _seg_loss(logits, masks):
    """BCE with logits + (1 - soft IoU), per image, batch mean (the authors' loss)."""
    prob = logits.sigmoid()
    inter = (prob * masks).sum((2, 3))
    iou = inter / ((prob + masks).sum((2, 3)) - inter)
    return F.binary_cross_entropy_with_logits(logits, masks) + (1 - iou).mean()


def _squares(n, size=64, seed=0):
    """Bright squares on noise, with their masks: uint8 images [n, 3, size, size], masks [n, size, size]."""
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, size, size, generator=g) * 100).to(torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        s = int(torch.randint(size // 4, size // 2, (1,), generator=g))
        y, x = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        masks[i, y : y + s, x : x + s] = 1
    images[:, :, :, :] += (masks[:, None] * 150).to(torch.uint8)
    return images, masks


@pytest.mark.parametrize("name", ["linear", "bitfit", "adapter", "ssf", "lora", "full"])
def test_sam_tiny_trains_every_method(sa, name):
    """The mask loss reaches exactly the trainable tensors (but the decoder's unused outputs), and Adam on a few
    images of squares lowers it."""
    torch.manual_seed(0)
    bb = create_backbone("sam:tiny", num_classes=1)
    apply_method(bb, name)
    images, masks = _squares(8)
    x, y = normalize(images, "imagenet"), masks[:, None].float()
    loss = _seg_loss(bb(x), y)
    loss.backward()
    for n, p in bb.named_parameters():  # the model's and the method's own (extras)
        assert (p.grad is not None) == (p.requires_grad and not n.startswith(UNUSED)), n
    opt = torch.optim.Adam([p for p in bb.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        _seg_loss(bb(x), y).backward()
        opt.step()
    with torch.no_grad():
        assert _seg_loss(bb(x), y) < 0.8 * loss.detach()


class _SegTask:
    """What GPS's ``loss=task`` asks of a task: ``prepare`` (here: ImageNet normalisation), ``model_context`` (here:
    the masks published, as the segment task does) and ``loss``."""

    def __init__(self):
        self.seen = 0

    def prepare(self, batch, train):
        assert not train
        self.seen += len(batch["image"])
        return {**batch, "image": normalize(batch["image"], "imagenet")}

    def model_context(self, batch):
        from vpeft.seg_prompts import ground_truth

        return ground_truth(batch["mask"])

    def loss(self, outputs, batch):
        return _seg_loss(outputs, batch["mask"][:, None].float())


def test_gps_selects_by_the_tasks_loss_per_row(sa):
    """``loss=task``: one pass of the task's loss over the given (training) split, gradients summed; every output row
    of every encoder layer keeps its largest |gradient| entry; the decoder is no site and trains fully."""
    torch.manual_seed(0)
    bb = create_backbone("sam:tiny", num_classes=1)
    apply_method(bb, "linear")
    images, masks = _squares(6, seed=3)
    split = ImageDataset(images, torch.zeros(6, dtype=torch.long), "squares", masks=masks)
    # The reference: the summed gradient of the same loss over the same batches (4 + 2), drop-path off anyway.
    ref = create_backbone("sam:tiny", num_classes=1)
    ref.load_state_dict(bb.state_dict())
    for part in (slice(0, 4), slice(4, 6)):
        _seg_loss(ref(normalize(images[part], "imagenet")), masks[part][:, None].float()).backward()
    task = _SegTask()
    sel = GPSConfig(loss="task", norm_bias="outside_blocks", batch_size=4)
    state = sel.prepare(bb, DeviceData(split, torch.device("cpu")), task=task)
    assert task.seen == 6 and sel.record()["pass_images"] == 6 and sel.record()["views_used"] is None
    ref_sites = weight_sites(ref)
    assert state.keys() == ref_sites.keys() and not any(n.startswith("head") for n in state)
    for n, m in ref_sites.items():
        g = m.weight.grad.abs().reshape(m.weight.shape[0], -1)
        rows = torch.arange(g.shape[0])
        assert torch.equal(state[n], rows * g.shape[1] + g.argmax(1)), n
    sel.apply(bb, state)
    assert count_params(bb) == sum(p.numel() for p in bb.head.parameters()) + 2 * sum(len(v) for v in state.values())


def test_gps_refuses_a_class_label_loss_on_a_task_without_class_labels():
    seg = type("Seg", (), {"name": "segment", "labels": "mask"})()
    with pytest.raises(
        ConfigError, match=r"loss 'supcon' .* task 'segment' has mask labels, not class labels \(use loss=task"
    ):
        GPSConfig().check_task(seg)
    GPSConfig(loss="task").check_task(seg)
    GPSConfig(criterion="magnitude").check_task(seg)
    with pytest.raises(ConfigError, match=r"gps loss=task needs the run's task"):
        GPSConfig(loss="task").scores(create_backbone(TINY, 2), dataset=[1])


def test_gps_on_sam_tiny_merges(sa):
    """The selection's sparse updates (Linear and Conv2d sites, the neck's padded 3x3 included) fold into the weights:
    the merged model gives the same masks."""
    torch.manual_seed(0)
    bb = create_backbone("sam:tiny", num_classes=1)
    apply_method(bb, "linear")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = bb(x)
    sel = GPSConfig(criterion="random", norm_bias="outside_blocks")
    sel.apply(bb, sel.select(bb, sel.scores(bb)))
    assert {"neck_2", "patch_embed_proj", "blocks_1_attn_qkv"} <= set(bb.extras["gps"])
    with torch.no_grad():
        for sv in bb.extras["gps"].values():
            sv.gps_values.normal_(0, 0.1)
        updated = bb(x)
        sel.merge(bb)
        bb.remove_hooks()
        torch.testing.assert_close(bb(x), updated, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(updated, plain, atol=1e-3)


def test_sam_tiny_anatomy_sites_are_the_encoders(sa):
    """The anatomy is timm's SAM encoder's, with the mask head as the one head site; the decoder's layers are no
    method's sites."""
    bb = create_backbone("sam:tiny", num_classes=1)
    rows = bb.anatomy.describe()
    heads = [r for r in rows if r.site == "head"]
    assert [(r.module, r.kind) for r in heads] == [("head", "SamMaskHead")]
    assert all(not r.module.startswith("head.") for r in rows) and len(bb.blocks) == 2
    assert [bb.anatomy.residual_branches(b)["attn"].to_output is not None for b in bb.blocks] == [True, False]
    assert bb.forward_head(bb.forward_features(torch.randn(1, 3, 64, 64)), pre_logits=True).shape == (1, 32, 8, 8)
