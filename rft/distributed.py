"""Data-parallel training over several processes, as `accelerate launch` (or torchrun) starts them.

    accelerate launch --num_processes 2 -m rft train --preset wordle

Every process holds the whole model and the same LoRA adapter. Each step, each process samples
and scores its own prompts and computes the gradients of its share of the loss; the gradients
are summed across processes before the optimiser step, so the adapters stay identical. (A
DistributedDataParallel wrapper would sync in the backward pass of every forward, while a GRPO
step runs several forwards through the same parameters: the shared prompt prefill, then one per
micro-batch; summing once per optimiser step is simpler and exact.)

Only the main process writes the run directory; the others send it what the step's metrics row,
rollouts and log lines need. With one process, the usual case, every method is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    device: str | None = None  # this process's device when launched; None: the run's config decides

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def launched(self) -> bool:
        return self.world_size > 1

    def sum_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its sum over the processes: one message, not one per tensor."""
        if not self.launched:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:  # a parameter this process's loss did not reach still takes the others' gradient
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            count = p.numel()
            p.grad.copy_(flat[offset:offset + count].view_as(p.grad))
            offset += count

    def copy_from_main(self, params: Iterable[torch.Tensor]) -> None:
        """Give every process the main process's values of `params` (e.g. a freshly initialised adapter)."""
        if not self.launched:
            return
        for p in params:
            dist.broadcast(p.data, src=0)

    def sum(self, value: float) -> float:
        """`value` summed over the processes."""
        if not self.launched:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total.item())

    def from_main(self, value):
        """The main process's `value` (any picklable object), in every process."""
        if not self.launched:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather_at_main(self, value) -> list | None:
        """Every process's `value` in rank order, at the main process; None elsewhere."""
        if not self.launched:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def wait_for_all(self) -> None:
        if self.launched:
            dist.barrier()

    def _object_device(self) -> torch.device | None:
        # NCCL moves pickled objects through the GPU; gloo through the CPU.
        return torch.device(self.device) if self.device and self.device.startswith("cuda") else None


def join_launched_processes(device_preference: str = "auto") -> Processes:
    """The process group a launcher described in the environment (WORLD_SIZE > 1), joined: NCCL on
    GPUs (one per process), gloo on CPUs. Without a launcher, one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    cpu = device_preference == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    device = "cpu" if state.device.type == "cpu" else str(state.device)  # "cpu:0" names the same CPU
    return Processes(rank=state.process_index, world_size=state.num_processes, device=device)
