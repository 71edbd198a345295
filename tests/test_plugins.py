"""Plugins in-process: signatures read into hyperparameters, the registry (ok and broken
entries), building and training what plugins declare, the record a run keeps and a worker's
check of it. The plugins are real distributions installed with pip into a scratch directory
(``plugin_fixtures``) and put on ``sys.path`` only while a test needs them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from plugin_fixtures import TESTPLUG_VERSION, install_lion, install_testplug, on_path
from pydantic import ValidationError
from torch import nn

import bamsprod
from bamsprod.core.config import DEFAULT_LR, OPTIMIZERS, RunConfig
from bamsprod.core.hparam import HParam
from bamsprod.core.plugins import (
    OptimizerSpec,
    PluginError,
    plugin_mismatch,
    plugins_used,
    read_signature,
    registry,
)
from bamsprod.core.plugins.convert import to_spec

# --------------------------------------------------------------------------- signatures


class _Betas(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 3e-4, betas=(0.9, 0.99), weight_decay: float = 0,
                 steps: int = 5, nesterov: bool = False, kernel=(1, 2, 3), name: str = "x",
                 mode=None, *, foreach: bool | None = None, **kwargs):
        super().__init__(params, {"lr": lr})


def test_signature_types_tuples_and_what_is_left_out() -> None:
    sig = read_signature(_Betas, skip=1, where="t")
    t = sig.table
    assert list(t) == ["lr", "beta1", "beta2", "weight_decay", "steps", "nesterov",
                       "kernel_0", "kernel_1", "kernel_2"]  # foreach=None: left out
    assert t["beta1"] == HParam(0.9) and t["beta2"] == HParam(0.99)
    assert t["weight_decay"].kind is float and t["weight_decay"].default == 0.0  # annotated
    assert t["steps"].kind is int and t["nesterov"].kind is bool
    assert t["kernel_1"] == HParam(2)
    assert "name" not in t and "mode" not in t and "kwargs" not in t
    back = sig.to_kwargs({"beta1": 0.8, "beta2": 0.95, "kernel_0": 4, "kernel_1": 5,
                          "kernel_2": 6, "steps": 2})
    assert back == {"betas": (0.8, 0.95), "kernel": (4, 5, 6), "steps": 2}


def test_signature_info_adds_bounds_log_help_and_a_missing_default() -> None:
    def model(input_shape, num_classes, width, depth: int = 2, gain=(1.0, 2.0)):
        return None

    with pytest.raises(PluginError, match="'width' has no default"):
        read_signature(model, skip=2, where="m")
    info = {"width": {"default": 16, "lo": 4, "hi": 64, "log": True, "help": "units"},
            "gain": {"lo": 0.0}, "gain_1": {"hi": 3.0}}
    t = read_signature(model, skip=2, where="m", info=info).table
    assert t["width"] == HParam(16, 4.0, 64.0, "units", True)
    assert t["gain_0"].lo == 0.0 and t["gain_1"].lo == 0.0 and t["gain_1"].hi == 3.0
    assert t["depth"] == HParam(2)


@pytest.mark.parametrize(("info", "words"), [
    ({"depth": {"lo": 3}}, "default of depth must be >= 3"),
    ({"depth": {"log": True}}, "log scale needs lo > 0"),
    ({"depth": {"lo": 5, "hi": 1}}, "lo 5 is above hi 1"),
    ({"depht": {"lo": 1}}, "names 'depht', which is not one of"),
    ({"depth": {"low": 1}}, "unknown key 'low'"),
    ({"flag": {"lo": 0}}, "takes no lo, hi or log"),
])
def test_bad_info_is_an_error_that_says_why(info, words) -> None:
    def model(input_shape, num_classes, depth: int = 2, flag: bool = True):
        return None

    with pytest.raises(PluginError, match=words):
        read_signature(model, skip=2, where="m", info=info)


def test_a_plain_torch_optimizer_class_is_read_unchanged() -> None:
    spec = to_spec("optimizer", torch.optim.Adam, "adam")
    assert spec.default_lr == 1e-3
    assert {"beta1", "beta2", "eps", "weight_decay", "amsgrad"} <= set(spec.hparams)
    assert not {"foreach", "fused", "capturable", "differentiable", "maximize", "lr",
                "params"} & set(spec.hparams)
    assert spec.latent_clip and spec.state_slots == 2


def test_an_optimizer_without_lr_or_not_an_optimizer_is_refused_with_the_reason() -> None:
    class NoLr(torch.optim.Optimizer):
        def __init__(self, params, rate: float = 0.1):
            super().__init__(params, {"rate": rate})

    with pytest.raises(PluginError, match="must take an lr argument"):
        to_spec("optimizer", NoLr, "nolr")
    with pytest.raises(PluginError, match="not a torch.optim.Optimizer subclass"):
        to_spec("optimizer", lambda params, lr=0.1: None, "fn")
    with pytest.raises(PluginError, match="default lr must be a number in"):
        to_spec("optimizer", type("Big", (torch.optim.SGD,), {
            "bamsprod_hparams": {"lr": {"default": 50.0}}}), "big")


def test_decorators_set_the_attributes_and_check_their_keys() -> None:
    @bamsprod.hparams(lr={"lo": 1e-4, "log": True})
    @bamsprod.dataset_info(shape=(1, 2, 2), classes=2)
    def f() -> None: ...

    assert f.bamsprod_hparams == {"lr": {"lo": 1e-4, "log": True}}
    assert f.bamsprod_dataset == {"shape": (1, 2, 2), "classes": 2, "train": None, "test": None}
    with pytest.raises(TypeError, match="unknown key 'hgh'"):
        bamsprod.hparams(lr={"hgh": 1})


def test_a_spec_checks_itself() -> None:
    with pytest.raises(PluginError, match="'module:attr'"):
        OptimizerSpec("nocolon", {}, default_lr=1e-3)
    with pytest.raises(PluginError, match="state_slots"):
        OptimizerSpec("a:b", {}, default_lr=1e-3, state_slots=-1)


# ------------------------------------------------------------------- installed plugins


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    lion = install_lion(tmp_path_factory.mktemp("lion"))
    testplug = install_testplug(tmp_path_factory.mktemp("testplug"))
    return lion, testplug


@pytest.fixture
def plugins(installed: tuple[Path, Path]) -> Iterator[None]:
    with on_path(*installed):
        yield


def test_registry_lists_plugins_and_broken_ones_without_failing(plugins: None) -> None:
    reg = registry()
    by = {(e.kind, e.name, e.dist): e for e in reg.entries}
    lion = by["optimizer", "lion", "bamsprod-lion"]
    assert lion.ok and lion.version == "0.1.0" and not lion.builtin
    assert by["model", "tinymlp", "bamsprod-lion"].ok
    assert by["dataset", "blobs", "bamsprod-testplug"].ok
    broken = by["optimizer", "broken", "bamsprod-testplug"]
    assert not broken.ok and "ImportError" in broken.error and "notinstalled" in broken.error
    assert "not a torch.optim.Optimizer" in by["optimizer", "notanoptimizer",
                                               "bamsprod-testplug"].error
    assert "taken by bamsprod" in by["optimizer", "adam", "bamsprod-testplug"].error
    assert reg.get("optimizer", "adam").builtin  # the built-in keeps its name
    names = reg.names("optimizer")
    assert names[:7] == ["bamsprod", "bop", "adabound", "amsbound", "adam", "amsgrad", "sgd"]
    assert {"lion", "signmom"} <= set(names) and "broken" not in names
    assert {e.name for e in reg.broken()} == {"broken", "notanoptimizer", "adam"}


def test_run_config_validates_plugin_names_and_hyperparameters(plugins: None) -> None:
    c = RunConfig(optimizer="lion", model="tinymlp", hparams={"beta2": 0.98})
    assert c.lr == DEFAULT_LR["lion"] == 1e-4
    assert c.hparams == {"beta1": 0.9, "beta2": 0.98, "weight_decay": 0.0}
    assert c.model_args == {"width": 64, "scale": True}
    cases = [({"optimizer": "nope"}, "optimizer", "lion"),
             ({"optimizer": "broken"}, "optimizer", "notinstalled"),
             ({"optimizer": "lion", "hparams": {"beta1": 1.5}}, "hparams", "beta1 must be <="),
             ({"optimizer": "signmom", "hparams": {"warmup": 2.5}}, "hparams", "integer"),
             ({"optimizer": "signmom", "lr": 2.0}, "lr", "lr must be <= 1.0"),
             ({"model": "tinymlp", "model_args": {"width": 2}}, "model_args", "width must be")]
    for body, loc, words in cases:
        with pytest.raises(ValidationError) as info:
            RunConfig(**body)
        err = info.value.errors()[0]
        assert err["loc"][0] == loc and words in err["msg"], (body, err)
    schema = RunConfig.model_json_schema()["properties"]
    assert "lion" in schema["optimizer"]["enum"] and "blobs" in schema["dataset"]["enum"]


def test_lion_steps_as_the_paper_writes_it(plugins: None) -> None:
    from bamsprod_lion import Lion

    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(50))
    m = torch.zeros(50)
    opt = Lion([p], lr=0.1, betas=(0.8, 0.95), weight_decay=0.5)
    for _ in range(3):
        g = torch.randn(50)
        p.grad = g.clone()
        before = p.detach().clone()
        opt.step()
        expected = before * (1 - 0.1 * 0.5) - 0.1 * torch.sign(0.8 * m + 0.2 * g)
        m = 0.95 * m + 0.05 * g
        torch.testing.assert_close(p.detach(), expected)
        torch.testing.assert_close(opt.state[p]["exp_avg"], m)
    spec = registry().spec("optimizer", "lion")
    assert spec.state_slots == 1 and spec.lr.log and spec.lr.lo == 1e-7


def test_plugin_optimizer_gets_the_groups_and_the_latent_clip(plugins: None) -> None:
    from bamsprod.core.nn import binary_weights, build_model
    from bamsprod.core.optim import build

    torch.manual_seed(0)
    model = build_model("tinymlp", (1, 8, 8), 10, width=16)
    latent = binary_weights(model)
    assert list(latent) == ["3.weight"]  # found through bamsprod.BinaryLinear
    opt = build("lion", model, lr=5.0)  # a huge step: far outside [-1, 1] without the clip
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["binary"]["binary"] and groups["binary"]["latent_clip"] == 1.0
    assert groups["binary"]["betas"] == (0.9, 0.99)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    assert latent["3.weight"].abs().max().item() == pytest.approx(1.0)
    real = [p for g in opt.param_groups if g["name"] == "real" for p in g["params"]]
    assert max(p.abs().max().item() for p in real) > 2.0  # the real weights are not clipped


def test_plugin_model_is_sized_on_the_meta_device(plugins: None) -> None:
    from bamsprod.core.model_size import param_count, size_field, too_large
    from bamsprod.core.nn import build_model

    built = build_model("tinymlp", (1, 8, 8), 10, width=48)
    n = sum(p.numel() for p in built.parameters())
    assert param_count("tinymlp", "digits", {"width": 48}) == n
    big = RunConfig(optimizer="lion", model="tinymlp", model_args={"width": 4096})
    why = too_large(big, 2**20)
    assert why is not None and "width <= " in why and "lion state" in why
    assert size_field(big) == (("model_args", "width"), 4096)


def test_binary_weights_hook_for_models_with_their_own_layers() -> None:
    from bamsprod.core.nn import binary_weights

    class Own(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def binary_weights(self) -> dict[str, nn.Parameter]:
            return {"w": self.w}

    own = Own()
    assert binary_weights(own) == {"w": own.w}


def test_plugin_dataset_loads_checked_and_cut(plugins: None) -> None:
    from bamsprod.core.data import DatasetError, load_dataset, status

    data = load_dataset("blobs", train_subset=30, test_subset=10)
    assert (data.name, data.shape, data.classes, data.n_train, data.n_test) == (
        "blobs", (1, 4, 4), 3, 30, 10)
    assert any(s.name == "blobs" and "bamsprod-testplug" in s.message for s in status())
    import bamsprod_testplug.data as mod

    declared = mod.blobs.bamsprod_dataset
    try:
        mod.blobs.bamsprod_dataset = {**declared, "classes": 4}
        from bamsprod.core.plugins import reload

        reload()
        with pytest.raises(DatasetError, match="declares shape .* and 4 classes"):
            load_dataset("blobs")
    finally:
        mod.blobs.bamsprod_dataset = declared


def test_a_run_trains_with_plugins_end_to_end(plugins: None) -> None:
    from bamsprod.core.train import train

    config = RunConfig(optimizer="signmom", dataset="blobs", model="tinymlp",
                       model_args={"width": 16}, epochs=3, batch_size=32, lr=0.01, seed=1)
    result = train(config)
    assert result.state == "succeeded"
    assert result.history[-1].test_acc > 0.6  # 3 classes: chance is 1/3
    assert result.history[-1].quant_error > 0 and math.isfinite(result.history[-1].flip_rate)


def test_record_and_worker_check(installed: tuple[Path, Path],
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    lion, testplug = installed
    with on_path(lion, testplug):
        record = plugins_used(RunConfig(optimizer="lion", dataset="blobs"))
        assert record == [
            {"kind": "optimizer", "name": "lion", "dist": "bamsprod-lion", "version": "0.1.0"},
            {"kind": "dataset", "name": "blobs", "dist": "bamsprod-testplug",
             "version": TESTPLUG_VERSION}]
        assert plugins_used(RunConfig()) == []
        assert plugin_mismatch(record, "w1@box") is None
    with on_path(testplug):  # a worker without bamsprod-lion
        why = plugin_mismatch(record, "w1@box")
        assert why is not None
        for words in ("optimizer 'lion'", "bamsprod-lion 0.1.0", "w1@box",
                      "does not have it installed", "pip install 'bamsprod-lion==0.1.0'",
                      "retry the run"):
            assert words in why, (words, why)
    other = install_lion(tmp_path_factory.mktemp("lion2"), version="0.2.0")
    with on_path(other, testplug):  # a worker with another version
        why = plugin_mismatch(record, "w2@box")
        assert why is not None and "worker w2@box has bamsprod-lion 0.2.0" in why
        assert "bamsprod-lion 0.1.0 (recorded" in why


def test_builtin_config_hashes_are_unchanged() -> None:
    """The registry replaced closed tables: stored runs must keep their config hashes (the
    values were computed by the version before plugins)."""
    assert RunConfig().config_hash() == "717ffdd4863a7392"
    assert RunConfig(optimizer="sgd").config_hash() == "0994a4cbc341e83e"
    assert RunConfig(model="resnet18", dataset="cifar10").config_hash() == "6722bf4a7caa9ad1"
    assert RunConfig(optimizer="bop", model="binarynet").config_hash() == "8015461a9dcaf9c3"
    assert set(OPTIMIZERS) == {"bamsprod", "bop", "adabound", "amsbound", "adam", "amsgrad",
                               "sgd"}
