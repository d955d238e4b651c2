"""A training step replayed as one CUDA graph: forward, backward, SGD, the center update and the learning
rate, for one run or K stacked runs.

LeNet++ at batch 128 is launch-bound on a GPU: a step is a few hundred small kernels, each launched by
Python. Captured once, a step is one launch. The batch and the step's learning rate are copied into
tensors the graph reads (every batch is full: the batch stream wraps from one pass over the data into
the next), so the numbers are those of the eager step, kernel for kernel. The first steps run eagerly on
a side stream (CUDA's advice before a capture), and any failure to capture falls back to the eager step
for the rest of the epoch, saying so once.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


class CapturedStep:
    """A step, replayed as a CUDA graph after WARMUP eager steps; per-run losses (K, 2) as the eager step's.
    `stack` gives the step's host part (prepare, its rate; advance, its count: step.Stack) and `body(x, y, lr)`
    its work on the device (step.step_numerics with graph=True), which is what the graph records."""

    WARMUP = 3

    def __init__(self, stack: Any, body: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                 device: torch.device, say: Callable[[str], None]):
        self.stack, self.body, self.say = stack, body, say
        self.lr = torch.zeros((), device=device)
        self.side = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager = False  # the capture failed: eager from then on
        self.calls = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.lr.fill_(self.stack.prepare(clear_grads=self.graph is None))
        if self.graph is None and (self.eager or self.calls < self.WARMUP or not self._capture(x, y)):
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                out = self.body(x, y, self.lr)
            torch.cuda.current_stream().wait_stream(self.side)
        else:
            self.x.copy_(x)
            self.y.copy_(y)
            self.graph.replay()
            out = self.out.clone()
        self.calls += 1
        self.stack.advance()
        return out

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Record the step on the batch's static copies; the replay that follows runs it."""
        self.x, self.y = x.clone(), y.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.out = self.body(self.x, self.y, self.lr)
        except Exception as e:  # noqa: BLE001 - any failure to capture leaves the eager step, which is correct
            self.eager = True
            self.say(f"CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                     "training on eagerly (--cuda-graphs off says so from the start)")
            return False
        self.graph = graph
        return True


def can_capture(device: torch.device, setting: str) -> bool:
    """Whether `--cuda-graphs auto` captures here: on CUDA only; the CPU has no launches to save."""
    return setting == "auto" and device.type == "cuda"
