"""The binary version of Reddi, Kale & Kumar's convex counter-example (ICLR 2018).

A latent weight ``x in [-1, 1]`` is binarized to ``w = sign(x)`` (``sign(0) = +1``) and trained
through the straight-through estimator. The loss sequence is ``f_t(w) = C*w`` when
``t mod 3 == 1`` and ``-w`` otherwise, so over each cycle the loss is ``(C - 2) * w`` and the
best binary point is ``w = -1``. With ``beta1 = 0``, ``beta2 = 1/(1 + C^2)`` and
``lr_t = 0.1/sqrt(t)``, Adam's rare large gradient is forgotten quickly and it drifts to
``x = +1`` (average regret stays near ``2(C - 2)/3``), while AMSGrad, SGD and BAMSProd reach
``x = -1`` (average regret tends to 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from bamsprod.core.metrics import sign
from bamsprod.core.optim import BAMSProd

__all__ = ["CONVEX_OPTIMIZERS", "ConvexTrace", "run_convex", "convex_figure", "write_convex_html"]

CONVEX_OPTIMIZERS = ("adam", "amsgrad", "sgd", "bamsprod")


@dataclass
class ConvexTrace:
    """Per step ``t = 1..T``: the latent weight after the step and the average regret so far."""

    optimizer: str
    x: list[float] = field(default_factory=list)
    avg_regret: list[float] = field(default_factory=list)

    @property
    def final_x(self) -> float:
        return self.x[-1]

    @property
    def final_regret(self) -> float:
        return self.avg_regret[-1]


def _optimizer(name: str, p: torch.Tensor, c: float) -> torch.optim.Optimizer:
    betas = (0.0, 1.0 / (1.0 + c * c))
    if name == "adam":
        return torch.optim.Adam([p], lr=0.1, betas=betas)
    if name == "amsgrad":
        return torch.optim.Adam([p], lr=0.1, betas=betas, amsgrad=True)
    if name == "sgd":
        return torch.optim.SGD([p], lr=0.1)
    if name == "bamsprod":
        return BAMSProd([{"params": [p], "binary": True, "latent_clip": 1.0}], lr=0.1, betas=betas)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(CONVEX_OPTIMIZERS)}")


def _loss(t: int, w: torch.Tensor, c: float) -> torch.Tensor:
    return c * w if t % 3 == 1 else -w


def run_convex(
    optimizers: tuple[str, ...] | list[str] = CONVEX_OPTIMIZERS,
    steps: int = 3000,
    c: float = 3.0,
    x0: float = 0.5,
) -> dict[str, ConvexTrace]:
    """Run the example for each optimizer; ``lr_t = 0.1/sqrt(t)`` through a LambdaLR schedule."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if c <= 2:
        raise ValueError(f"C must be > 2 for the example to mislead Adam, got {c}")
    best = torch.tensor(-1.0)
    traces: dict[str, ConvexTrace] = {}
    for name in optimizers:
        x = torch.tensor([x0], requires_grad=True)
        opt = _optimizer(name, x, c)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 / (i + 1) ** 0.5)
        trace = ConvexTrace(name)
        regret = 0.0
        for t in range(1, steps + 1):
            w = x + (sign(x) - x).detach()  # sign forward, identity (STE; |x| <= 1) backward
            loss = _loss(t, w, c).sum()
            regret += loss.item() - _loss(t, best, c).item()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(-1.0, 1.0)  # the feasible set (BAMSProd's latent clip does the same)
            trace.x.append(x.item())
            trace.avg_regret.append(regret / t)
        traces[name] = trace
    return traces


def convex_figure(traces: dict[str, ConvexTrace]):
    """A two-panel Plotly figure: latent weight ``x_t`` and average regret per optimizer."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("latent weight x_t", "average regret R_t/t")
    )
    for tr in traces.values():
        steps = list(range(1, len(tr.x) + 1))
        fig.add_scatter(x=steps, y=tr.x, name=tr.optimizer, legendgroup=tr.optimizer, row=1, col=1)
        fig.add_scatter(
            x=steps,
            y=tr.avg_regret,
            name=tr.optimizer,
            legendgroup=tr.optimizer,
            showlegend=False,
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="step t", type="log")
    fig.update_layout(
        title="Binary convex example (Reddi et al. 2018, C=3)", template="plotly_white"
    )
    return fig


def write_convex_html(traces: dict[str, ConvexTrace], path: str | Path) -> Path:
    """A standalone HTML page with plotly.js inlined from the installed package (no CDN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    convex_figure(traces).write_html(path, include_plotlyjs=True, full_html=True)
    return path
