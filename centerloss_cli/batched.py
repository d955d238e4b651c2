"""Several lambda/alpha runs trained as one stacked model in one process (`centerloss sweep --batched`).

LeNet++ is too small to keep a GPU busy; stacking K runs with torch.func (stack_module_state +
vmap) turns K small steps into one K-times-larger step. Each member keeps its own weights, centers,
lambda, alpha and momentum, sees the same batches as its sequential run with the same seed, and
writes the same run folder, checkpoint included, so any member can later be resumed on its own.
"""
from __future__ import annotations

import copy
import sys
import time
from contextlib import ExitStack
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from .center_loss import center_delta
from .config import TrainConfig, to_dict, validate
from .data import MNIST, batches, epoch_permutation, load_mnist
from .devices import autocast, float32_precision, resolve_device
from .errors import CenterLossError
from .plots import PlotWorker
from .train import (
    Interrupted, RunResult, TrainState, completed_result, diverged, end_epoch, open_run, prepare_run,
    resume_command, save_checkpoint, stop_on_sigint,
)

# Settings in which the members of one stacked model may differ.
MEMBER_SETTINGS = {"lambda", "alpha", "name"}


class Stack:
    """K TrainStates as stacked tensors: parameters (K, ...), centers (K, C, D), one SGD over them."""

    def __init__(self, states: Sequence[TrainState]):
        self.states = list(states)
        first = self.states[0]
        self.params, _ = stack_module_state([s.model for s in states])
        self.names = list(self.params)
        self.base = copy.deepcopy(first.model).to("meta")  # a shell for functional_call; holds no data
        device = first.center_loss.centers.device
        self.lam = torch.tensor([s.config.lam for s in states], device=device)
        self.alpha = torch.tensor([s.config.alpha for s in states], device=device).view(-1, 1, 1)
        self.centers = torch.stack([s.center_loss.centers for s in states])
        self.rule = first.config.center_update
        self.precision = first.config.precision
        cfg = first.config
        # SGD is elementwise, so one optimizer over stacked tensors is K independent optimizers.
        self.optimizer = torch.optim.SGD(self.params.values(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(cfg.lr_milestones), cfg.lr_gamma)
        self.scheduler.load_state_dict(first.scheduler.state_dict())
        self.optimizer.param_groups[0]["lr"] = first.optimizer.param_groups[0]["lr"]
        for name, stacked in self.params.items():
            buffers = [_momentum(s, name) for s in states]
            if all(b is not None for b in buffers):
                self.optimizer.state[stacked]["momentum_buffer"] = torch.stack(buffers)
        self.forward = vmap(self._call, in_dims=(0, None))

    def _call(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return functional_call(self.base, params, (x,))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step of every member; returns their [softmax, center] losses as (K, 2)."""
        with autocast(self.precision, x.device):
            features, logits = self.forward(self.params, x)  # (K, m, 2), (K, m, 10)
        features, logits = features.float(), logits.float()
        k, m = logits.shape[:2]
        softmax = F.cross_entropy(logits.reshape(k * m, -1), y.repeat(k), reduction="none").view(k, m).mean(1)
        center = (features - self.centers[:, y]).pow(2).sum((1, 2)) / (2 * m)
        # Members are independent, so the gradient of the sum is each member's own gradient; with
        # lambda = 0 the center term adds exactly zero.
        loss = (softmax + self.lam * center).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.centers.sub_(self.alpha * center_delta(self.centers, features.detach(), y, self.rule))
        return torch.stack([softmax.detach(), center.detach()], dim=1)

    def unstack(self) -> None:
        """Copy every member's weights, momentum, lr schedule and centers back into its TrainState."""
        lr = self.optimizer.param_groups[0]["lr"]
        for k, s in enumerate(self.states):
            named = dict(s.model.named_parameters())
            with torch.no_grad():
                for name in self.names:
                    named[name].copy_(self.params[name][k])
                s.center_loss.centers.copy_(self.centers[k])
            for name in self.names:
                buf = self.optimizer.state.get(self.params[name], {}).get("momentum_buffer")
                if buf is not None:
                    s.optimizer.state[named[name]]["momentum_buffer"] = buf[k].clone()
            s.optimizer.param_groups[0]["lr"] = lr
            s.scheduler.load_state_dict(self.scheduler.state_dict())


def _momentum(state: TrainState, name: str) -> torch.Tensor | None:
    param = dict(state.model.named_parameters())[name]
    return state.optimizer.state.get(param, {}).get("momentum_buffer")


def check_stackable(configs: Sequence[TrainConfig]) -> None:
    """Members of one stacked model may differ in lambda and alpha only."""
    first = {k: v for k, v in to_dict(configs[0]).items() if k not in MEMBER_SETTINGS}
    for c in configs[1:]:
        other = {k: v for k, v in to_dict(c).items() if k not in MEMBER_SETTINGS}
        differ = sorted(k for k in first if first[k] != other[k])
        if differ:
            raise CenterLossError(f"runs trained as one stacked model may differ in lambda and alpha only, not in {', '.join(differ)}")


def run_stacked_epochs(states: Sequence[TrainState], data: MNIST, progress: bool = True,
                       plotter: PlotWorker | None = None) -> None:
    """Train members that stand at the same epoch and batch, as one stacked model, to their last epoch."""
    first = states[0]
    cfg = first.config
    device = first.loss_sums.device
    with stop_on_sigint() as stop, float32_precision(cfg.precision):
        while not first.finished:
            epoch = first.epoch + 1
            started = time.perf_counter() - first.seconds
            stack = Stack(states)
            order = epoch_permutation(len(data.train), cfg.seed, epoch, device)
            sums = torch.stack([s.loss_sums for s in states])
            first_bad = torch.full((len(states),), -1, device=device)
            bar = tqdm(total=first.steps_per_epoch, initial=first.batch, desc=f"{len(states)} runs, epoch {epoch}/{first.total_epochs}",
                       disable=not progress, dynamic_ncols=True, file=sys.stderr)
            step, batch = first.step, first.batch
            with bar:
                for x, y in batches(data.train, order, cfg.batch_size, start=batch):
                    losses = stack.step(x, y).double()
                    step, batch = step + 1, batch + 1
                    sums += losses
                    first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses).all(1), step, first_bad)
                    bar.update(1)
                    log_now = batch % cfg.log_every == 0 or batch == first.steps_per_epoch or stop[0]
                    if log_now or device.type == "cpu":
                        for k, bad in enumerate(first_bad.tolist()):
                            if bad >= 0:
                                raise CenterLossError(f"{states[k].config.run_name}: {diverged(epoch, bad)}")
                    if stop[0]:
                        break
            stack.unstack()
            for k, s in enumerate(states):
                s.step, s.batch, s.seconds = step, batch, time.perf_counter() - started
                s.loss_sums.copy_(sums[k])
            if stop[0]:
                for s in states:
                    save_checkpoint(s.config.run_dir, s)
                raise Interrupted(
                    f"interrupted at epoch {epoch}, batch {batch}; checkpoints saved. "
                    f"Resume one run with: {resume_command(first.config)}, or run the same sweep again"
                )
            for s in states:
                end_epoch(s, data, s.config.run_dir, epoch, started, plotter)


def train_stacked(configs: Sequence[TrainConfig], *, data: MNIST | None = None, progress: bool = True) -> list[RunResult]:
    """Train (or resume, or skip when finished) every config, unfinished ones stacked into one model.

    Runs that stand at different points (say, one was resumed alone) are stacked in groups."""
    for c in configs:
        validate(c)
    check_stackable(configs)
    results: dict[str, RunResult] = {}
    todo: list[tuple[TrainConfig, bool]] = []
    for c in configs:
        c, has_checkpoint = prepare_run(c, resume=True, overwrite=False, explicit=None)
        if has_checkpoint and (done := completed_result(c)) is not None:
            results[c.run_name] = done
        else:
            todo.append((c, has_checkpoint))
    if todo:
        cfg = todo[0][0]
        device = resolve_device(cfg.device)
        if data is None:
            data = load_mnist(cfg.data_dir, device, cfg.train_limit, cfg.test_limit, cfg.verify)
        with ExitStack() as opened:
            states = [opened.enter_context(open_run(c, has, False, data, device)) for c, has in todo]
            plotter = opened.enter_context(PlotWorker())
            groups: dict[tuple[int, int, int], list[TrainState]] = {}
            for s in states:
                groups.setdefault((s.epoch, s.batch, s.total_epochs), []).append(s)
            for group in groups.values():
                start = group[0].epoch
                run_stacked_epochs(group, data, progress, plotter)
                for s in group:
                    results[s.config.run_name] = RunResult(s.config.run_dir, s.config, s.history, s.epoch - start)
    return [results[c.run_name] for c in configs]
