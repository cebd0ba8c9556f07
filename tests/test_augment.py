import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from vpeft.data import augment as A


def _images(n, h=40, w=48, seed=0, smooth=True):
    """uint8 ``[n, 3, h, w]``: noise, or noise on a coarse grid resized up (closer to a photograph)."""
    g = torch.Generator().manual_seed(seed)
    if not smooth:
        return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)
    coarse = torch.randint(0, 256, (n, 3, max(2, h // 6), max(2, w // 6)), dtype=torch.uint8, generator=g)
    return F.resize(coarse, [h, w], antialias=True)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("size", [24, (20, 28)])
def test_shapes_and_dtypes(size):
    x = _images(5)
    h, w = (size, size) if isinstance(size, int) else size
    assert A.random_resized_crop_flip(x, size, _gen()).shape == (5, 3, h, w)
    for kind in A.KINDS:
        y = A.augment(x, size, kind, _gen())
        assert y.shape == (5, 3, h, w) and y.dtype == torch.uint8 and y.is_contiguous()
    assert A.rand_augment(x, _gen()).shape == x.shape and A.rand_augment(x, _gen()).dtype == torch.uint8
    v = A.gps_views(x, size, _gen())
    assert v.shape == (5, 2, 3, h, w) and v.dtype == torch.uint8
    with pytest.raises(ValueError, match="crop_flip_randaug"):
        A.augment(x, size, "none", _gen())


def test_deterministic_for_a_seeded_generator():
    x = _images(12)
    for fn in (
        lambda g: A.augment(x, 24, "crop_flip", g),
        lambda g: A.augment(x, 24, "crop_flip_randaug", g),
        lambda g: A.gps_views(x, 24, g),
    ):
        a, b, c = fn(_gen(3)), fn(_gen(3)), fn(_gen(4))
        assert torch.equal(a, b) and not torch.equal(a, c)
    # the dispatcher is the crop then RandAugment on the same generator
    g = _gen(5)
    ref = A.rand_augment(A.random_resized_crop_flip(x, 24, g), g)
    assert torch.equal(A.augment(x, 24, "crop_flip_randaug", _gen(5)), ref)


def test_crop_boxes_within_bounds_and_distributed_as_torchvision():
    H, W, n = 60, 90, 4000
    top, left, h, w = A.crop_boxes(n, H, W, _gen(), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)).unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all()
    assert (h > 0).all() and (w > 0).all()
    share, ratio = (h * w).double() / (H * W), w.double() / h.double()
    # whole-pixel rounding moves the area share and the ratio a little past the drawn bounds
    assert share.min() >= 0.07 and share.max() <= 1.0
    assert ratio.min() >= 3 / 4 * 0.9 and ratio.max() <= 4 / 3 / 0.9
    # the same distribution as torchvision's own draws (10 attempts, first that fits)
    t = v2.RandomResizedCrop(8, scale=(0.08, 1.0), antialias=True)
    torch.manual_seed(0)
    img = torch.zeros(3, H, W, dtype=torch.uint8)
    ref = [getattr(t, "make_params", getattr(t, "_get_params", None))([img]) for _ in range(n)]
    ref_share = torch.tensor([p["height"] * p["width"] / (H * W) for p in ref], dtype=torch.float64)
    ref_top = torch.tensor([p["top"] / (H - p["height"] + 1) for p in ref], dtype=torch.float64)
    assert abs(share.mean() - ref_share.mean()) < 0.02 and abs(share.std() - ref_share.std()) < 0.02
    assert abs((top.double() / (H - h + 1)).mean() - ref_top.mean()) < 0.03


def test_crop_boxes_fall_back_to_the_centre_crop():
    # no attempt fits: the centre crop clamped to the ratio range, as torchvision
    boxes = A.crop_boxes(50, 100, 400, _gen(), scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3))
    assert (boxes == torch.tensor([0, 133, 100, 133])).all()  # too wide: full height, width 4/3 of it
    boxes = A.crop_boxes(50, 64, 64, _gen(), scale=(1.0, 1.0), ratio=(2.0, 3.0))
    assert (boxes == torch.tensor([16, 0, 32, 64])).all()  # too narrow for ratio >= 2: full width, height 64/2
    boxes = A.crop_boxes(50, 64, 64, _gen(), scale=(2.0, 3.0), ratio=(3 / 4, 4 / 3))
    assert (boxes == torch.tensor([0, 0, 64, 64])).all()  # ratio inside the range: the whole image


def test_flips_about_half():
    n = 2000
    ramp = torch.linspace(0, 255, 16).round().to(torch.uint8)
    x = ramp.expand(n, 3, 16, 16).contiguous()  # dark on the left, bright on the right
    y = A.random_resized_crop_flip(x, 8, _gen()).float()
    flipped = y[..., 0].mean((1, 2)) > y[..., -1].mean((1, 2))
    assert 0.45 < flipped.float().mean() < 0.55
    y = A.random_resized_crop_flip(x, 8, _gen(), flip=False).float()
    assert not (y[..., 0].mean((1, 2)) > y[..., -1].mean((1, 2))).any()


@pytest.mark.parametrize("smooth", [True, False])
@pytest.mark.parametrize("upsample", [True, False])
def test_resized_crop_matches_torchvision(smooth, upsample):
    size, n, H, W = (24, 20), 24, 40, 48
    x = _images(n, H, W, smooth=smooth)
    g = _gen(1)
    if upsample:  # crops no larger than the output: plain bilinear
        h = torch.randint(4, size[0] + 1, (n,), generator=g)
        w = torch.randint(4, size[1] + 1, (n,), generator=g)
    else:  # crops larger than the output: the antialiasing filter
        h = torch.randint(size[0] + 1, H + 1, (n,), generator=g)
        w = torch.randint(size[1] + 1, W + 1, (n,), generator=g)
    top = (torch.rand(n, generator=g) * (H - h + 1)).long()
    left = (torch.rand(n, generator=g) * (W - w + 1)).long()
    flips = torch.arange(n) % 3 == 0
    boxes = torch.stack([top, left, h, w], 1)
    y = A._resized_crop_matmul(x, boxes, size, flips).float()  # the device path, here on the CPU

    def ref(img, b, f, dtype):
        out = F.resized_crop(img.to(dtype), *b.tolist(), list(size), antialias=True)
        out = out.round().clamp(0, 255).to(torch.uint8)
        return F.horizontal_flip(out) if f else out

    # torchvision's float path (what it does on CUDA): the same weights, so equal up to rounding ties
    exact = torch.stack([ref(x[i], boxes[i], flips[i], torch.float32) for i in range(n)]).float()
    assert (y - exact).abs().max() <= 1 and (y - exact).abs().mean() < 1e-3
    # torchvision's uint8 CPU kernel rounds between its passes: within 1 grey level, 0.15-0.2 on average
    u8 = torch.stack([ref(x[i], boxes[i], flips[i], torch.uint8) for i in range(n)]).float()
    assert (y - u8).abs().max() <= 1 and (y - u8).abs().mean() < 0.3
    # on the CPU, resized_crop runs torchvision's own uint8 kernel per image: equal
    assert torch.equal(A.resized_crop(x, boxes, size, flips).float(), u8)


def test_randaug_ops_are_torchvisions():
    tv = v2.RandAugment()
    assert list(A.RANDAUG_OPS) == list(tv._AUGMENTATION_SPACE)
    for name, (fn, signed) in A.RANDAUG_OPS.items():
        ref_fn, ref_signed = tv._AUGMENTATION_SPACE[name]
        assert signed == ref_signed
        assert (fn is None and ref_fn(31, 32, 40) is None) or torch.equal(fn(31, 32, 40), ref_fn(31, 32, 40))


@pytest.mark.parametrize("name", list(A.RANDAUG_OPS))
def test_randaug_op_on_a_batch_equals_torchvision_per_image(name):
    x = _images(6, 64, 56, smooth=False)
    tv = v2.RandAugment()
    fn, signed = A.RANDAUG_OPS[name]
    for level in (3, 9, 30):
        mag = 0.0 if fn is None else float(fn(31, 64, 56)[level])
        for m in [mag, -mag] if signed else [mag]:
            ref = torch.stack([tv._apply_image_or_video_transform(i, name, m, tv.interpolation, tv._fill) for i in x])
            assert torch.equal(A.apply_randaug_op(x, name, m), ref), (level, m)


def test_rand_augment_equals_torchvision_per_image_with_the_same_draws():
    n, names = 64, list(A.RANDAUG_OPS)
    x = _images(n, 32, 40)
    y = A.rand_augment(x, _gen(7))
    ops, neg = A.draw_randaug(n, _gen(7), 2)  # the draws rand_augment made
    assert len(set(ops.flatten().tolist())) == len(names)  # every op drawn at least once
    tv = v2.RandAugment()
    for i in range(n):
        img = x[i]
        for step in range(2):
            name = names[ops[i, step]]
            fn, signed = tv._AUGMENTATION_SPACE[name]
            m = 0.0 if fn(31, 32, 40) is None else float(fn(31, 32, 40)[9])
            m = -m if signed and neg[i, step] else m
            img = tv._apply_image_or_video_transform(img, name, m, tv.interpolation, tv._fill)
        assert torch.equal(y[i], img), f"image {i}: {names[ops[i, 0]]}, {names[ops[i, 1]]}"


def test_randaug_draws_uniform_ops_and_signs():
    n, k = 14000, len(A.RANDAUG_OPS)
    ops, neg = A.draw_randaug(n, _gen(), 2)
    counts = torch.bincount(ops.flatten(), minlength=k).float()
    assert ((counts - 2 * n / k).abs() < 0.1 * 2 * n / k).all()  # 2000 each, std ~43
    assert abs(neg.float().mean() - 0.5) < 0.02
    assert (ops[:, 0] != ops[:, 1]).float().mean() > 0.85  # the two steps draw independently


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_jitter_ops_match_torchvision(kind):
    x = _images(8, 24, 24, smooth=False)
    f = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 0.7, 1.1, 1.3]) if kind < 3 else torch.linspace(-0.1, 0.1, 8)
    op = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue][kind]
    ref = torch.stack([op(x[i], float(f[i])) for i in range(8)]).float()
    y = A._jitter_op(x, kind, f).float()
    assert (y - ref).abs().max() <= 1 and (y - ref).abs().mean() < 1e-3


def test_color_jitter_applies_each_images_ops_in_its_own_order():
    n = 40
    x = _images(n, 16, 16, smooth=False)
    y = A.color_jitter(x, _gen(2), p=0.8)
    g = _gen(2)  # the draws color_jitter made
    on = torch.rand(n, generator=g) < 0.8
    order = torch.rand(n, 4, generator=g).argsort(1)
    lo, hi = torch.tensor([0.6, 0.6, 0.6, -0.1]), torch.tensor([1.4, 1.4, 1.4, 0.1])
    factors = lo + (hi - lo) * torch.rand(n, 4, generator=g)
    ops = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    assert 0 < on.sum() < n
    for i in range(n):
        img = x[i]
        for k in order[i].tolist() if on[i] else []:
            img = ops[k](img, float(factors[i, k]))
        assert (y[i].float() - img.float()).abs().max() <= 1
    assert not torch.equal(y, x)


def test_gps_views_differ_and_grayscale_about_a_fifth():
    x = _images(500, 16, 16, smooth=False)  # colourful: no view is gray unless made so
    v = A.gps_views(x, 12, _gen())
    assert not torch.equal(v[:, 0], v[:, 1])
    gray = ((v[:, :, 0] == v[:, :, 1]) & (v[:, :, 1] == v[:, :, 2])).flatten(2).all(-1)
    assert 0.15 < gray.float().mean() < 0.25


def test_channels_last_and_non_contiguous_inputs():
    big = _images(6, 50, 60)
    x = big[:, :, 5:45, 7:55]  # a non-contiguous view
    cl = x.contiguous(memory_format=torch.channels_last)
    for fn in (lambda t, g: A.augment(t, 24, "crop_flip_randaug", g), lambda t, g: A.gps_views(t, 24, g)):
        ref = fn(x.contiguous(), _gen())
        assert torch.equal(fn(x, _gen()), ref) and torch.equal(fn(cl, _gen()), ref)


def test_a_batch_of_one():
    x = _images(1)
    for kind in A.KINDS:
        assert A.augment(x, 24, kind, _gen()).shape == (1, 3, 24, 24)
    assert A.gps_views(x, 24, _gen()).shape == (1, 2, 3, 24, 24)
    y = A.random_resized_crop_flip(x, 24, _gen(), scale=(1.0, 1.0), ratio=(48 / 40, 48 / 40), flip=False)
    ref = F.resize(x.float(), [24, 24], antialias=True).round().to(torch.uint8)  # the whole image, resized
    assert (y.float() - ref.float()).abs().max() <= 1


class _HostSyncs(TorchDispatchMode):
    """Records what would make the host wait for the device: a read of a device value, a data-dependent shape, a
    blocking host-to-device copy."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        a = args[0]
        ops = torch.ops.aten
        if func in (ops._local_scalar_dense.default, ops.nonzero.default) and a.device.type != "cpu":
            self.found.append(str(func))
        if func is ops._to_copy.default and a.device.type == "cpu" and kwargs.get("device") is not None:
            if torch.device(kwargs["device"]).type != "cpu" and not kwargs.get("non_blocking", False):
                self.found.append(f"blocking copy of {tuple(a.shape)}")
        return func(*args, **kwargs)


def test_runs_on_the_images_device_without_host_syncs():
    # meta tensors stand in for CUDA ones: every op must run there (no CPU tensor mixed in), and nothing may read a
    # device value or copy the drawn parameters with a blocking copy
    x = torch.empty(6, 3, 40, 48, dtype=torch.uint8, device="meta")
    for fn in (
        lambda g: A.augment(x, 24, "crop_flip", g),
        lambda g: A.augment(x, 24, "crop_flip_randaug", g),
        lambda g: A.gps_views(x, 24, g),
    ):
        with _HostSyncs() as mode:
            y = fn(_gen())
        assert y.device.type == "meta" and y.dtype == torch.uint8 and mode.found == []
    with _HostSyncs() as mode:
        torch.ones(3).to("meta")
    assert mode.found == ["blocking copy of (3,)"]  # the probe sees one
