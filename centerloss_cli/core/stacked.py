"""K runs trained as one model (`sweep --batched`): their parameters stacked, one vmap'd forward, one SGD.

LeNet++ is too small to keep a GPU busy; stacking K runs with torch.func (stack_module_state + vmap)
turns K small steps into one K-times-larger step. Each member keeps its own weights, centers, lambda,
alpha and momentum and sees the same batches as it would alone.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from .center_loss import center_loss, move_centers
from .precision import autocast
from .solver import SGD
from .step import TrainState, set_lr

# Settings in which the runs of one stacked model may differ (field names): each member has its own.
MEMBER_SETTINGS = {"lam", "alpha", "name"}


class StackedStep:
    """K runs as one model: parameters (K, ...), centers (K, C, D), one SGD over the stacked tensors."""

    def __init__(self, states: list[TrainState]):
        self.states = states
        first = states[0]
        cfg = first.config
        self.params, _ = stack_module_state([s.model for s in states])
        self.base = copy.deepcopy(first.model).to("meta")  # a shell for functional_call; holds no data
        device = first.center_loss.centers.device
        self.lam = torch.tensor([s.config.lam for s in states], device=device)
        self.alpha = torch.tensor([s.config.alpha for s in states], device=device).view(-1, 1, 1)
        self.centers = torch.stack([s.center_loss.centers for s in states])
        self.velocity = torch.stack([s.center_loss.velocity for s in states]) if cfg.center_update == "caffe" else None
        # SGD is elementwise, so one optimizer over stacked tensors is K independent optimizers; its parameters
        # come in the members' order (the model's), so the momentum buffers line up by index.
        self.optimizer = SGD(self.params.items(), cfg.lr, cfg.momentum, cfg.weight_decay)
        self.optimizer.buffers = [None if any(b is None for b in bufs) else torch.stack(bufs)
                                  for bufs in zip(*(s.optimizer.buffers for s in states))]
        self.forward = vmap(lambda params, x: functional_call(self.base, params, (x,)), in_dims=(0, None))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.body(x, y, self.prepare(), graph=False)
        self.advance()
        return out

    def prepare(self, clear_grads: bool = True) -> float:
        """The host's part: this step's learning rate (the gradients cleared, but for a graph's replay)."""
        if clear_grads:
            self.optimizer.zero_grad()
        first = self.states[0]
        return set_lr(self.optimizer, first.config, first.step, first.total_steps)

    def body(self, x: torch.Tensor, y: torch.Tensor, lr: float | torch.Tensor, graph: bool = True) -> torch.Tensor:
        """Forward, losses, backward, SGD and the centers' step of every member; (K, 2) losses."""
        cfg = self.states[0].config
        with autocast(cfg.precision, x.device, cache=not graph):
            features, logits = self.forward(self.params, x)  # (K, m, 2), (K, m, 10)
        features, logits = features.float(), logits.float()
        k, m = logits.shape[:2]
        softmax = F.cross_entropy(logits.reshape(k * m, -1), y.repeat(k), reduction="none",
                                  label_smoothing=cfg.label_smoothing).view(k, m).mean(1)
        center = center_loss(features, self.centers, y)  # (K,)
        # Members are independent, so the gradient of the sum is each member's own gradient; with
        # lambda = 0 the center term adds exactly zero.
        loss = (softmax + self.lam * center).sum()
        loss.backward()
        if cfg.grad_clip:
            self.optimizer.clip(cfg.grad_clip, members=k)
        self.optimizer.step(lr)
        move_centers(self.centers, self.velocity, features.detach(), y, cfg.center_update, self.alpha, lr, cfg.momentum)
        return torch.stack([softmax.detach(), center.detach()], dim=1)

    def advance(self) -> None:
        for s in self.states:
            s.step += 1

    def finish(self) -> None:
        """Copy every member's weights, momentum, learning rate and centers back into its TrainState."""
        for k, s in enumerate(self.states):
            named = dict(s.model.named_parameters())
            with torch.no_grad():
                for name, stacked in self.params.items():
                    named[name].copy_(stacked[k])
                s.center_loss.centers.copy_(self.centers[k])
                if self.velocity is not None:
                    s.center_loss.velocity.copy_(self.velocity[k])
            s.optimizer.buffers = [None if buf is None else buf[k].clone() for buf in self.optimizer.buffers]
            for group, own in zip(self.optimizer.param_groups, s.optimizer.param_groups):
                own["lr"] = group["lr"]
