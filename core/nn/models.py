"""The models a run can train, built by name: ``mlp``, ``binarynet`` and ``resnet18``.

Every model follows the usual BNN practice: the first and the last layer are real-valued
(``nn.Conv2d`` / ``nn.Linear``), BatchNorm is real, everything in between is a
:class:`~core.nn.binary.BinaryLinear` or :class:`~core.nn.binary.BinaryConv2d` whose latent
weights ``core.nn.binary_weights`` finds. With ``binary_act=True`` the binary layer's own
``sign`` (STE gradient ``1{|x| <= 1}``) is the activation in front of it; with
``binary_act=False`` a ``hardtanh`` takes its place, the real nonlinearity the network keeps.
The real last layer is fed ``hardtanh`` of the features.

Use :func:`build_model`; its names and arguments are exactly ``core.config.MODELS`` (these three
register through the same entry points as a plugin's models)::

    model = build_model("resnet18", (3, 32, 32), 10, width_mult=0.25)

References: Courbariaux et al., "Binarized Neural Networks" (2016); Helwegen et al., "Latent
Weights Do Not Exist" (NeurIPS 2019, the BinaryNet CIFAR-10 recipe); Liu et al., "Bi-Real Net"
(ECCV 2018).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from bamsprod.core.config import resolve_model_args
from bamsprod.core.nn.binary import BinaryConv2d, BinaryLinear
from bamsprod.core.plugins import registry, resolve

__all__ = ["build_model", "model_names", "BinaryMLP", "BinaryNet", "BiRealResNet18"]


def _ch(base: int, width_mult: float) -> int:
    """Channels of a layer scaled by ``width_mult``, at least 1."""
    return max(1, int(round(base * width_mult)))


def _conv_out(size: int, stride: int) -> int:
    """Spatial size after a 3x3 convolution with padding 1 and ``stride``."""
    return (size - 1) // stride + 1


def _act(binary_act: bool) -> nn.Module:
    """The activation in front of a binary layer: its own sign, or hardtanh when real."""
    return nn.Identity() if binary_act else nn.Hardtanh()


def _init_real(model: nn.Module) -> None:
    """Kaiming init for the real convolutions, unit/zero BatchNorm; binary and linear keep
    torch's default (uniform, ``|w| <= 1/sqrt(fan_in)``, well inside the STE window)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not getattr(m, "is_binary", False):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BinaryMLP(nn.Module):
    """BinaryNet-style MLP.

    ``flatten -> Linear(in, width) -> BN -> [sign -> BinaryLinear(width, width) -> BN]
    x depth -> hardtanh -> Linear(width, classes)`` (``hardtanh`` for ``sign`` when
    ``binary_act=False``); first and last layers real.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 512,
        depth: int = 2,
        scale: bool = True,
        binary_act: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = [
            nn.Flatten(),
            nn.Linear(c * h * w, width, bias=False),
            nn.BatchNorm1d(width),
        ]
        for _ in range(depth):
            layers += [
                _act(binary_act),
                BinaryLinear(width, width, scale=scale, binary_act=binary_act),
                nn.BatchNorm1d(width),
            ]
        layers += [nn.Hardtanh(), nn.Linear(width, num_classes)]
        self.layers = nn.Sequential(*layers)
        _init_real(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class BinaryNet(nn.Module):
    """Bop's CIFAR-10 BinaryNet, channels scaled by ``width_mult``.

    ``128C3 - 128C3 - MP2 - 256C3 - 256C3 - MP2 - 512C3 - 512C3 - MP2 - 1024FC - 1024FC - 10``
    with BatchNorm after every layer; the first conv and the last FC are real. Max pooling is
    skipped where the feature map is already 1x1, and an adaptive average pool to at most 4x4
    sits before the classifier, so 28x28 and 8x8 inputs work too (for 32x32 it is the identity).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        width_mult: float = 0.25,
        scale: bool = True,
        binary_act: bool = True,
    ) -> None:
        super().__init__()
        c_in, h, w = in_shape
        c1, c2, c3 = (_ch(b, width_mult) for b in (128, 256, 512))
        fc = _ch(1024, width_mult)

        def bconv(i: int, o: int) -> BinaryConv2d:
            return BinaryConv2d(i, o, 3, padding=1, scale=scale, binary_act=binary_act)

        feats: list[nn.Module] = [nn.Conv2d(c_in, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)]
        plan = [(c1, c1, True), (c1, c2, False), (c2, c2, True), (c2, c3, False), (c3, c3, True)]
        for i, o, pool in plan:
            feats += [_act(binary_act), bconv(i, o)]
            if pool and min(h, w) >= 2:
                feats.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            feats.append(nn.BatchNorm2d(o))
        ph, pw = min(h, 4), min(w, 4)
        feats.append(nn.AdaptiveAvgPool2d((ph, pw)))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            _act(binary_act),
            BinaryLinear(c3 * ph * pw, fc, scale=scale, binary_act=binary_act),
            nn.BatchNorm1d(fc),
            _act(binary_act),
            BinaryLinear(fc, fc, scale=scale, binary_act=binary_act),
            nn.BatchNorm1d(fc),
            nn.Hardtanh(),
            nn.Linear(fc, num_classes, bias=False),
            nn.BatchNorm1d(num_classes),
        )
        _init_real(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class _BiRealConv(nn.Module):
    """``BN(BinaryConv3x3(x)) + shortcut(x)``: Bi-Real's real shortcut around one
    binary conv. A strided (or widening) one gets ``AvgPool2 -> real 1x1 conv -> BN``."""

    def __init__(self, c_in: int, c_out: int, stride: int, scale: bool, binary_act: bool) -> None:
        super().__init__()
        self.act = _act(binary_act)
        self.conv = BinaryConv2d(
            c_in, c_out, 3, stride=stride, padding=1, scale=scale, binary_act=binary_act
        )
        self.bn = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            pool: nn.Module = (
                nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False)
                if stride > 1
                else nn.Identity()
            )
            self.shortcut = nn.Sequential(
                pool, nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(self.act(x))) + self.shortcut(x)


class _BasicBlock(nn.Sequential):
    """ResNet basic block as two Bi-Real units (a real shortcut around each binary conv)."""

    def __init__(self, c_in: int, c_out: int, stride: int, scale: bool, binary_act: bool) -> None:
        super().__init__(
            _BiRealConv(c_in, c_out, stride, scale, binary_act),
            _BiRealConv(c_out, c_out, 1, scale, binary_act),
        )


class BiRealResNet18(nn.Module):
    """Binary ResNet-18 with Bi-Real shortcuts, CIFAR-style stem.

    ``real 3x3 conv -> BN -> 4 stages x 2 blocks (64/128/256/512 x width_mult, stride 2 from
    stage 2 on) -> adaptive avg pool -> real fc``. Strides are dropped where the map is 1x1.
    At ``width_mult=1`` with 10 classes it has about 11.2M parameters.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        width_mult: float = 1.0,
        scale: bool = True,
        binary_act: bool = True,
    ) -> None:
        super().__init__()
        c_in, h, w = in_shape
        widths = [_ch(b, width_mult) for b in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(c_in, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0])
        )
        blocks: list[nn.Module] = []
        prev = widths[0]
        for i, width in enumerate(widths):
            stride = 2 if i > 0 and min(h, w) > 1 else 1
            h, w = _conv_out(h, stride), _conv_out(w, stride)
            blocks += [
                _BasicBlock(prev, width, stride, scale, binary_act),
                _BasicBlock(width, width, 1, scale, binary_act),
            ]
            prev = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)
        _init_real(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


def model_names() -> list[str]:
    """The known model names, exactly ``core.config.MODELS`` (installed plugins included)."""
    return registry().names("model")


def build_model(
    name: str, in_shape: tuple[int, int, int], num_classes: int, **model_args: Any
) -> nn.Module:
    """Build model ``name`` for inputs of shape ``(C, H, W)`` and ``num_classes`` outputs.

    ``name`` is any model of the registry (``core.plugins``): the three above, or a plugin's.
    ``model_args`` are checked and completed with defaults by ``core.config.resolve_model_args``
    (so an unknown or out-of-range argument is a ``ValueError``). Parameters are drawn from
    torch's global generator: the same ``torch.manual_seed`` gives the same model.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones), bad shape or class
            count, or a bad model argument.
    """
    spec = registry().spec("model", name)
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"in_shape must be (channels, height, width), got {in_shape!r}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
    args = resolve_model_args(name, model_args)
    model = resolve(spec.build)(shape, int(num_classes), **args)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r} built a {type(model).__name__}, not a torch nn.Module")
    return model
