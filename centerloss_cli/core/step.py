"""One training step, for one run or K runs stacked into one model (`sweep --batched`): forward, softmax +
lambda * center loss, backward, SGD, the centers' step.

`Stack` holds what the step needs of its K runs. For K = 1 that is the run's own network, optimizer and
centers, stepped in place; for K > 1 their parameters stacked (torch.func's stack_module_state and vmap), so
that K small steps on one GPU become one K-times-larger step, each member keeping its own weights, centers,
lambda, alpha and momentum and seeing the batches it would see alone. Either way the step works on (K, ...)
tensors, and a run's numbers are those of the run trained alone: K = 1 is the plain step, op for op (the
tests hold it to a reference written out). A CUDA graph replays `step_numerics` (capture.py).
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from .center_loss import center_loss, move_centers
from .precision import autocast
from .schedule import lr_factor
from .solver import SGD

if TYPE_CHECKING:
    from .state import TrainState

# Settings in which the runs of one stacked model may differ (field names): each member has its own.
MEMBER_SETTINGS = {"lam", "alpha", "name"}


def set_lr(optimizer: SGD, config: Any, step: int, total: int) -> float:
    """Put the learning rate of step `step` of `total` (schedule.lr_factor) into the optimizer; returns the
    weights' rate."""
    lr = config.lr * lr_factor(config, step, total)
    optimizer.set_lr(lr)
    return lr


class Stack:
    """K >= 1 runs that stand at the same step, as the step sees them: a forward that gives (K, m, ...)
    features and logits, one SGD over their parameters, their centers (K, C, D), lambda and alpha."""

    def __init__(self, states: list[TrainState]):
        self.states, first, k = states, states[0], len(states)
        self.config, self.members = first.config, k
        if k == 1:  # the run's own tensors: the centers as a (1, C, D) view, stepped in place
            self.forward = lambda x: tuple(t.unsqueeze(0) for t in first.model(x))
            self.optimizer = first.optimizer
            self.centers = first.center_loss.centers.unsqueeze(0)
            velocity = first.center_loss.velocity
            self.velocity = None if velocity is None else velocity.unsqueeze(0)
            self.lam, self.alpha = first.config.lam, first.config.alpha
        else:
            self._stack(states)
        self.pulls = any(s.config.lam for s in states)  # with lambda = 0 the center term is left out entirely

    def _stack(self, states: list[TrainState]) -> None:
        """K > 1: copies of the members' tensors, stacked; `finish` copies them back."""
        self.params, _ = stack_module_state([s.model for s in states])
        base = copy.deepcopy(states[0].model).to("meta")  # a shell for functional_call; holds no data
        functional = vmap(lambda params, x: functional_call(base, params, (x,)), in_dims=(0, None))
        self.forward = lambda x: functional(self.params, x)
        device = states[0].center_loss.centers.device
        self.lam = torch.tensor([s.config.lam for s in states], device=device)
        self.alpha = torch.tensor([s.config.alpha for s in states], device=device).view(-1, 1, 1)
        self.centers = torch.stack([s.center_loss.centers for s in states])
        caffe = self.config.center_update == "caffe"
        self.velocity = torch.stack([s.center_loss.velocity for s in states]) if caffe else None
        # SGD is elementwise, so one optimizer over stacked tensors is K independent optimizers; its parameters
        # come in the members' order (the model's), so the momentum buffers line up by index.
        self.optimizer = SGD(self.params.items(), self.config.lr, self.config.momentum, self.config.weight_decay)
        self.optimizer.buffers = [None if any(b is None for b in bufs) else torch.stack(bufs)
                                  for bufs in zip(*(s.optimizer.buffers for s in states))]

    def prepare(self, clear_grads: bool = True) -> float:
        """The host's part of a step: its learning rate (the gradients cleared, but for a graph's replay)."""
        if clear_grads:
            self.optimizer.zero_grad()
        first = self.states[0]
        return set_lr(self.optimizer, self.config, first.step, first.total_steps)

    def advance(self) -> None:
        for s in self.states:
            s.step += 1

    def finish(self) -> None:
        """K > 1: copy every member's weights, momentum, learning rate and centers back into its TrainState."""
        if self.members == 1:
            return
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


def step_numerics(stack: Stack, x: torch.Tensor, y: torch.Tensor, lr: float | torch.Tensor,
                  graph: bool = False) -> torch.Tensor:
    """The work of one step of K runs: forward, softmax + lambda * center loss, backward, SGD at `lr`, the
    centers' step. Returns the (K, 2) losses. The gradients are None on entry; `lr` is a number, or a tensor
    on the device in a CUDA graph (`graph`), which replays this with each step's rate written into it."""
    cfg = stack.config
    for s in stack.states:
        s.model.train()
    with autocast(cfg.precision, x.device, cache=not graph):
        features, logits = stack.forward(x)  # (K, m, 2), (K, m, 10)
    # The losses, the centers and their update stay in fp32 whatever the network computes in.
    features, logits = features.float(), logits.float()
    k, m = logits.shape[:2]
    if k == 1:  # the fused mean, as one run alone computes it: the per-image mean can differ in its last bit
        softmax = F.cross_entropy(logits[0], y, label_smoothing=cfg.label_smoothing).unsqueeze(0)
    else:
        softmax = F.cross_entropy(logits.reshape(k * m, -1), y.repeat(k), reduction="none",
                                  label_smoothing=cfg.label_smoothing).view(k, m).mean(1)
    center = center_loss(features, stack.centers, y)  # (K,)
    # Members are independent, so the gradient of the sum is each member's own gradient. With lambda = 0
    # (every member's) the center term is left out, so the network gets exactly the softmax gradient.
    loss = (softmax + stack.lam * center).sum() if stack.pulls else softmax.sum()
    loss.backward()
    if cfg.grad_clip:
        stack.optimizer.clip(cfg.grad_clip, members=k if k > 1 else None)
    stack.optimizer.step(lr)
    # lr: this step's rate, which caffe's centers use
    move_centers(stack.centers, stack.velocity, features.detach(), y, cfg.center_update, stack.alpha, lr, cfg.momentum)
    return torch.stack([softmax.detach(), center.detach()], dim=1)


def take_step(stack: Stack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step of the stack's runs, eagerly: its rate, its work, its count. The (K, 2) losses."""
    losses = step_numerics(stack, x, y, stack.prepare())
    stack.advance()
    return losses


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of one run on softmax + lambda * center loss, then the center update: the two losses."""
    losses = take_step(Stack([state]), x, y)[0]
    return losses[0], losses[1]
