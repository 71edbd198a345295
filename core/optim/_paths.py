"""Which implementation an optimizer step takes, per device, and the compiled one.

Every optimizer here has up to four implementations of one step, all held equal to the
per-tensor reference by tests (1e-6 relative):

- ``single_tensor``: a readable loop over tensors, the reference; also what a user's own
  ``torch.compile(opt.step)`` traces, and the only path with ``differentiable=True``.
- ``foreach``: ``torch._foreach_*`` ops over all tensors, no host sync; any device.
- ``compiled``: the reference compiled once per process by ``torch.compile`` (Inductor: Triton
  kernels on CUDA), the default on CUDA. Each distinct parameter list compiles once; learning
  rates, betas and step counts enter as values, not constants, so schedulers do not recompile.
- ``fused``: a hand-written kernel (BAMSProd on CPU only, ``csrc/bamsprod_fused.cpp``).

``fused=None`` (the default) picks the fastest correct path for the group's device:
:func:`choose` says which, and :func:`describe` names the path an optimizer took, so a run
can record it next to its device.
"""

from __future__ import annotations

import functools
import textwrap
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "Path",
    "PathOptimizer",
    "choose",
    "compiled",
    "describe",
    "document_flags",
    "has_triton",
    "new_step",
    "refuse_complex",
    "run_compiled",
]

Path = Literal["single_tensor", "foreach", "compiled", "fused"]


@functools.cache
def has_triton() -> bool:
    """Whether Inductor can generate GPU kernels here (Triton importable, a CUDA device)."""
    if not torch.cuda.is_available():
        return False
    try:
        from torch.utils._triton import has_triton as torch_has_triton
    except ImportError:  # pragma: no cover - every supported torch has it
        return False
    return bool(torch_has_triton())


def choose(
    params: list[Tensor],
    *,
    foreach: bool | None,
    fused: bool | None,
    differentiable: bool,
    fused_devices: tuple[str, ...] = (),
) -> Path:
    """The path one group's step takes.

    ``fused=True`` asks for the device's fastest path (the kernel where ``fused_devices`` holds
    the device type, else the compiled path on CUDA); ``fused=False`` or ``foreach`` set
    explicitly keep the eager paths; ``None`` picks: the compiled path on CUDA, the kernel on
    devices in ``fused_devices``, else ``foreach`` when the tensors share one device and dtype.
    Inside a ``torch.compile`` of the caller, the reference (the compiler fuses it itself)
    unless ``fused=True``.
    """
    if differentiable or torch.jit.is_scripting() or not params:
        return "single_tensor"
    first = params[0]
    uniform = all(p.device == first.device and p.dtype == first.dtype for p in params)
    kind = first.device.type
    if fused or (fused is None and foreach is None):
        if torch.compiler.is_compiling() and not fused:
            # Inductor fuses the reference itself; a kernel's float arguments (the lr) would
            # be baked into the graph as constants and recompile whenever a scheduler moves them.
            return "single_tensor"
        if kind in fused_devices:  # the caller checked that its kernel takes every tensor
            return "fused"
        if kind == "cuda" and uniform and has_triton():
            return "compiled"
        if fused:
            raise RuntimeError(
                f"fused=True needs parameters on one of {sorted({*fused_devices, 'cuda'})} "
                f"(CUDA with Triton), got {first.device}; use foreach=True instead"
            )
    if foreach is False or torch.compiler.is_compiling():
        return "single_tensor"
    return "foreach" if uniform else "single_tensor"


@functools.cache
def compiled(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn`` compiled once per process (``fullgraph``, static shapes; Inductor).

    Loop reordering after fusion is off: with it, Inductor (torch 2.11, CUDA) failed an
    internal assertion on BAMSProd's step.
    """
    return torch.compile(
        fn, fullgraph=True, dynamic=False, options={"loop_ordering_after_fusion": False}
    )


_compile_error: list[str] = []


def run_compiled(fn: Callable[..., None], fallback: Callable[..., None], *args, **kwargs) -> str:
    """Run ``compiled(fn)``; where compiling fails (no working Triton or C++ toolchain), warn
    once and run ``fallback`` for the rest of the process. Returns the path that ran.

    Compiling happens before the compiled code runs, so a failure has changed nothing yet.
    """
    if not _compile_error:
        try:
            compiled(fn)(*args, **kwargs)
            return "compiled"
        except Exception as exc:  # BackendCompilerFailed, a missing compiler, ...
            if isinstance(exc, RuntimeError) and "in-place" in str(exc):
                raise
            _compile_error.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            warnings.warn(
                f"torch.compile of the optimizer step failed ({_compile_error[0]}); using the "
                "foreach path instead (same results, slower)",
                RuntimeWarning,
                stacklevel=3,
            )
    # The compiled path keeps step counts on the device: the fallback computes with them there
    # (capturable) rather than reading them on the host every step.
    fallback(*args, **({**kwargs, "capturable": True} if "capturable" in kwargs else kwargs))
    return "foreach"


def new_step(p: Tensor, on_device: bool) -> Tensor:
    """A fresh 0-d ``step`` tensor, as torch's optimizers keep it: on ``p``'s device when the
    step is captured or compiled for it (``on_device``), else on the CPU."""
    from torch.optim.optimizer import _get_scalar_dtype

    device = p.device if on_device else torch.device("cpu")
    return torch.zeros((), dtype=_get_scalar_dtype(), device=device)


def tensor_steps(state: Iterable[dict[str, Any]]) -> None:
    """Turn ``int`` step counts of an older state dict into 0-d CPU tensors, in place."""
    from torch.optim.optimizer import _get_scalar_dtype

    for s in state:  # a hook may keep other things than a parameter's dict in the state
        if isinstance(s, dict) and "step" in s and not torch.is_tensor(s["step"]):
            s["step"] = torch.tensor(float(s["step"]), dtype=_get_scalar_dtype())


def refuse_complex(owner: str, params: list[Any]) -> None:
    """Raise if any parameter is complex, before anything is added or stepped.

    ``params`` as an optimizer takes them: tensors, ``(name, tensor)`` pairs or group dicts (a
    group's iterator of parameters becomes a list here, so that it is read once). The maths of these
    optimizers (the bounds, ``e(p)``, Bop's signs) is defined for real numbers only.
    """
    for item in params:
        if isinstance(item, dict):
            group = item.get("params", [])
            if isinstance(group, Tensor):
                group = [group]
            elif not isinstance(group, list | tuple | set):  # torch refuses a set itself
                item["params"] = group = list(group)
            refuse_complex(owner, list(group))
            continue
        tensor = item[1] if isinstance(item, tuple) else item
        if isinstance(tensor, Tensor) and torch.is_complex(tensor):
            raise RuntimeError(
                f"{owner} does not support complex parameters (got {tensor.dtype}), please "
                "optimize torch.view_as_real(p) instead"
            )


def describe(paths: Iterable[str]) -> str:
    """One label for the paths an optimizer's groups took (``"fused"``, ``"compiled+foreach"``)."""
    seen = sorted(set(paths))
    return "+".join(seen) if seen else "none"


# torch's flags, described once for every optimizer here (as torch.optim.optimizer shares
# _foreach_doc, _maximize_doc, ...): a class docstring ends its Args with ``{flags}``, and
# :func:`document_flags` fills it in, with the class's own note per flag where it has one.
FLAG_DOCS: dict[str, str] = {
    "foreach": "``True``: the ``torch._foreach_*`` path (no host sync, any device); ``False``: "
    "the per-tensor reference; ``None`` (default): let ``fused`` decide.",
    "maximize": "maximize the objective (step along ``+grad``) (default: False).",
    "capturable": "keep ``step`` on the parameters' device and compute every step-dependent "
    "factor there, so the step can be captured in a CUDA graph or compiled without a host "
    "sync (default: False).",
    "differentiable": "let autograd flow through the step; hyperparameters may then be tensors "
    "that require grad. Only the per-tensor reference runs it (default: False).",
    "fused": "``None`` (default): the device's fastest correct path (:func:`core.optim._paths"
    ".choose`); ``True`` insists on it (a ``RuntimeError`` at the step where the device has "
    "none), ``False`` keeps the eager paths. :meth:`paths` names the paths that ran; every "
    "path agrees with the reference to 1e-6 relative.",
}


def document_flags(**notes: str) -> Callable[[type], type]:
    """A class decorator: put :data:`FLAG_DOCS` where the docstring says ``{flags}``, each text
    followed by ``notes[flag]`` (the class's own remark on that flag) where given."""

    unknown = sorted(set(notes) - set(FLAG_DOCS))
    if unknown:
        raise ValueError(f"no such flag: {unknown}")

    def fill(cls: type) -> type:
        doc = cls.__doc__ or ""
        line = next((ln for ln in doc.splitlines() if ln.strip() == "{flags}"), None)
        if line is None:
            raise ValueError(f"{cls.__name__}'s docstring has no {{flags}} line")
        indent = line[: len(line) - len(line.lstrip())]
        items = [
            textwrap.fill(
                " ".join(filter(None, (f"{flag}:", text, notes.get(flag, "")))),
                width=100 - len(indent),
                subsequent_indent="    ",
            )
            for flag, text in FLAG_DOCS.items()
        ]
        text = textwrap.indent("\n".join(items), indent)
        cls.__doc__ = doc.replace(line, text)
        return cls

    return fill


class PathOptimizer(torch.optim.Optimizer):
    """What this project's optimizers share around their maths: torch's flags, the path each
    group's step takes (:func:`choose`), the closure, and old state dicts brought up to date."""

    FLAG_DEFAULTS: dict[str, Any] = {
        "foreach": None,
        "fused": None,
        "maximize": False,
        "capturable": False,
        "differentiable": False,
    }

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._paths_taken: set[str] = set()
        if not isinstance(params, Tensor):  # torch's TypeError names a lone tensor
            params = list(params)
            # every group's, before any is added (Bop binarizes a group when it is added)
            refuse_complex(type(self).__name__, params)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after refusing complex parameters (see :func:`refuse_complex`)."""
        refuse_complex(type(self).__name__, [param_group])
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._paths_taken = set()
        for group in self.param_groups:
            for key, value in {**self.FLAG_DEFAULTS, **self.group_defaults(group)}.items():
                group.setdefault(key, value)
        tensor_steps(self.state.values())

    def group_defaults(self, group: dict[str, Any]) -> dict[str, Any]:
        """Keys an older state dict's ``group`` may lack, with the values it then meant."""
        return {}

    def paths(self) -> str:
        """The implementation(s) the steps so far took, e.g. ``"fused"`` or ``"compiled"``."""
        return describe(self._paths_taken)

    def _path(self, group: dict[str, Any], fused_devices: tuple[str, ...] = ()) -> Path:
        return choose(
            [p for p in group["params"] if p.grad is not None],
            foreach=group["foreach"],
            fused=group["fused"],
            differentiable=group["differentiable"],
            fused_devices=fused_devices,
        )

    def _closure_loss(self, closure: Any) -> Any:
        """Check CUDA-graph capture health, then evaluate ``closure`` (with grad) if given."""
        self._accelerator_graph_capture_health_check()
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()
