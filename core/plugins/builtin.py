"""The built-in optimizers, models and data sets, as the specs the registry keeps.

Our own distribution registers each of these as an entry point (pyproject.toml's
``[project.entry-points."bamsprod.optimizers"]`` ...), so they reach the registry the way a
plugin does. The objects are torch-free; each names its torch code by a ``"module:attr"``
string. ``ORDER`` is the order forms and listings show them in.
"""

from __future__ import annotations

from bamsprod.core.hparam import HParam
from bamsprod.core.plugins.specs import DatasetSpec, ModelSpec, OptimizerSpec

_OPT = "bamsprod.core.optim.registry"
_NN = "bamsprod.core.nn.models"
_SIZE = "bamsprod.core.model_size"
_DATA = "bamsprod.core.data.registry"

_BETAS = {
    "beta1": HParam(0.9, 0.0, 0.999999, "first-moment decay"),
    "beta2": HParam(0.999, 0.0, 0.999999, "second-moment decay"),
    "eps": HParam(1e-8, 0.0, 1.0, "denominator epsilon"),
    "weight_decay": HParam(0.0, 0.0, 1.0, "L2 penalty added to the gradient"),
}
_ADABOUND = {
    **_BETAS,
    "final_lr": HParam(0.1, 0.0, 10.0, "the SGD learning rate the bounds converge to"),
    "gamma": HParam(1e-3, 0.0, 1.0, "bound convergence speed"),
}

# Learning rates that suit each optimizer when the user gives none (see docs/optimizers.md).
bamsprod = OptimizerSpec(
    f"{_OPT}:build_bamsprod",
    {
        **_BETAS,
        "gamma": HParam(1e-3, 0.0, 1.0, "bound convergence speed; 0 is AMSGrad"),
        "kappa": HParam(1.0, 0.0, 100.0, "how much quantization error widens the target"),
    },
    default_lr=1e-3, latent_clip=False, state_slots=3,
    help="BAMSProd: AMSGrad with a quantization-aware bound (applies the latent clip itself)",
)
bop = OptimizerSpec(
    f"{_OPT}:build_bop",
    {
        "gamma": HParam(1e-4, 0.0, 1.0, "Bop adaptivity rate"),
        "threshold": HParam(1e-8, 0.0, 1.0, "Bop flip threshold tau"),
        "beta1": _BETAS["beta1"],
        "beta2": _BETAS["beta2"],
        "eps": _BETAS["eps"],
    },
    default_lr=1e-2, latent_clip=False, state_slots=2,
    help="Bop for the binary weights (held at +-1), Adam for the rest",
)
adabound = OptimizerSpec(f"{_OPT}:build_adabound", dict(_ADABOUND), default_lr=1e-3,
                         state_slots=2, help="AdaBound: Adam bounded towards SGD")
amsbound = OptimizerSpec(f"{_OPT}:build_amsbound", dict(_ADABOUND), default_lr=1e-3,
                         state_slots=3, help="AMSBound: AMSGrad bounded towards SGD")
adam = OptimizerSpec(f"{_OPT}:build_adam", dict(_BETAS), default_lr=1e-3, state_slots=2,
                     help="torch.optim.Adam")
amsgrad = OptimizerSpec(f"{_OPT}:build_amsgrad", dict(_BETAS), default_lr=1e-3, state_slots=3,
                        help="torch.optim.Adam(amsgrad=True)")
sgd = OptimizerSpec(
    f"{_OPT}:build_sgd",
    {
        "momentum": HParam(0.9, 0.0, 0.999999, "momentum"),
        "nesterov": HParam(False, help="Nesterov momentum"),
        "weight_decay": _BETAS["weight_decay"],
    },
    default_lr=1e-2, state_slots=1, help="torch.optim.SGD",
)

_BNN_ARGS = {
    "scale": HParam(True, help="per-output-channel scale a = mean|w|"),
    "binary_act": HParam(True, help="binarize activations (sign with STE)"),
}
mlp = ModelSpec(
    f"{_NN}:BinaryMLP",
    {
        "width": HParam(512, 8, 8192, "hidden units per layer"),
        "depth": HParam(2, 1, 16, "hidden (binary) layers"),
        **_BNN_ARGS,
    },
    param_count=f"{_SIZE}:mlp_params", size_arg="width", help="BinaryNet-style MLP",
)
binarynet = ModelSpec(
    f"{_NN}:BinaryNet",
    {
        "width_mult": HParam(0.25, 0.03125, 4.0, "channel multiplier (1.0 is Bop's BinaryNet)"),
        **_BNN_ARGS,
    },
    param_count=f"{_SIZE}:binarynet_params", size_arg="width_mult",
    help="BinaryNet VGG-style CNN",
)
resnet18 = ModelSpec(
    f"{_NN}:BiRealResNet18",
    {
        "width_mult": HParam(1.0, 0.03125, 4.0, "channel multiplier (1.0 is 64-128-256-512)"),
        **_BNN_ARGS,
    },
    param_count=f"{_SIZE}:resnet18_params", size_arg="width_mult", help="Bi-Real ResNet-18",
)

mnist = DatasetSpec(f"{_DATA}:load_mnist", (1, 28, 28), 10, 60000, 10000, "MNIST digits")
fashion_mnist = DatasetSpec(f"{_DATA}:load_fashion_mnist", (1, 28, 28), 10, 60000, 10000,
                            "Fashion-MNIST")
digits = DatasetSpec(f"{_DATA}:load_digits", (1, 8, 8), 10, 1437, 360,
                     "scikit-learn's 8x8 digits")
cifar10 = DatasetSpec(f"{_DATA}:load_cifar10", (3, 32, 32), 10, 50000, 10000,
                      "CIFAR-10 (bring your own files)")
synthetic = DatasetSpec(f"{_DATA}:load_synthetic", (1, 8, 8), 10, 2000, 500,
                        "a generated 10-class problem")

ORDER = {
    "optimizer": ("bamsprod", "bop", "adabound", "amsbound", "adam", "amsgrad", "sgd"),
    "model": ("mlp", "binarynet", "resnet18"),
    "dataset": ("mnist", "fashion-mnist", "digits", "cifar10", "synthetic"),
}
