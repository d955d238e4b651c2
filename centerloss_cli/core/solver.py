"""The official solver's SGD, written out: momentum, weight decay on the weights, and the biases at twice
the learning rate without decay (`lr_mult: 2, decay_mult: 0` in the prototxt).

It does what torch.optim.SGD does, op for op, so a run is bit-identical to one stepped by it (a test
holds it to that). Written out because it is one update rule for one run and for K stacked runs alike,
because the learning rate may then be a tensor on the device (a CUDA graph replays the step with it),
and because torch.optim costs every process that builds an optimizer a second for importing
torch._dynamo. Its state_dict is torch.optim.SGD's, so checkpoints read either way.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch


class SGD:
    """Two groups: the weights (PReLU slopes too) at lr with weight decay, the biases at 2 x lr without."""

    def __init__(self, named: Iterable[tuple[str, torch.Tensor]], lr: float, momentum: float, weight_decay: float):
        weights, biases = [], []
        for name, p in named:
            (biases if name.endswith("bias") else weights).append(p)
        self.momentum = momentum
        self.param_groups = [{"params": weights, "lr": lr, "lr_mult": 1.0, "weight_decay": weight_decay},
                             {"params": biases, "lr": 2 * lr, "lr_mult": 2.0, "weight_decay": 0.0}]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def set_lr(self, lr: float) -> None:
        """The weights' rate; the biases get theirs by their multiplier."""
        for group in self.param_groups:
            group["lr"] = group["lr_mult"] * lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def clip(self, max_norm: float, members: int | None = None) -> None:
        """Scale the gradient down to `max_norm` where its norm (over every parameter) is larger; with
        `members`, K stacked runs each by their own norm. No value is read back to the host."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if members:
            squares = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)  # (K,)
        else:
            squares = torch.stack([g.pow(2).sum() for g in grads]).sum()
        scale = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)) if members else scale)

    @torch.no_grad()
    def step(self, lr: float | torch.Tensor | None = None) -> None:
        """v <- momentum * v + (g + weight_decay * p) (v <- that gradient on the first step); p <- p - lr * v.
        `lr`: a tensor on the device in a CUDA graph holds the weights' rate; otherwise the groups' own rates
        (set_lr's) are used, a number given here being the same rate."""
        params = [(p, group) for group in self.param_groups for p in group["params"]]
        for i, (p, group) in enumerate(params):  # i: the parameter's momentum buffer
            if p.grad is None:
                continue
            g = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
            if self.momentum:
                g = self._momentum(i, g)
            if isinstance(lr, torch.Tensor):
                p.sub_(g * (lr * group["lr_mult"]))
            else:
                p.add_(g, alpha=-group["lr"])

    def _momentum(self, i: int, g: torch.Tensor) -> torch.Tensor:
        """Parameter i's velocity, moved by its gradient g: v <- momentum * v + g (v <- g on the first step)."""
        if self.buffers[i] is None:
            self.buffers[i] = torch.clone(g).detach()
        else:
            self.buffers[i].mul_(self.momentum).add_(g)
        return self.buffers[i]

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.SGD's format: momentum buffers by parameter index, and the groups' settings."""
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({"lr": group["lr"], "momentum": self.momentum, "dampening": 0, "nesterov": False,
                           "weight_decay": group["weight_decay"], "maximize": False, "foreach": None,
                           "differentiable": False, "fused": None, "params": list(range(start, start + n))})
            start += n
        state = {i: {"momentum_buffer": b} for i, b in enumerate(self.buffers) if b is not None}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        params = self.params
        if [len(g["params"]) for g in d["param_groups"]] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the optimizer state has other parameter groups")
        for group, saved in zip(self.param_groups, d["param_groups"]):
            group["lr"] = saved["lr"]
        self.buffers = [None] * len(params)
        for i, s in d["state"].items():
            buf = s.get("momentum_buffer")
            if buf is not None:
                if buf.shape != params[int(i)].shape:
                    raise ValueError(f"momentum buffer {i} has shape {tuple(buf.shape)}, the parameter "
                                     f"{tuple(params[int(i)].shape)}")
                self.buffers[int(i)] = buf.to(params[int(i)].device, params[int(i)].dtype)
