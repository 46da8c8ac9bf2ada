"""Data-parallel training over processes started by torchrun (gloo on the CPU, nccl on CUDA).

    torchrun --nproc_per_node=N -m latent_vs.cli train CONFIG ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `DataParallel.from_env` joins the process group.
Every rank builds the same networks (same seed; rank 0's weights are broadcast after set-up,
resume and stage 1 anyway), renders its own batches (its own source seed), and after each
backward pass the gradients are averaged over the ranks by one all-reduce of a flat buffer:
the update DistributedDataParallel makes, done explicitly because the objectives call their
sub-networks directly (ψ's trunk and head, φ) rather than through one forward. So N ranks
with `train.batch_size`-sized batches train like one process with N such batches averaged.
The loss rides along (a non-finite loss stops every rank at once); a second, tiny all-reduce
shares the stop decision and the learning-rate schedule's position (the maximum over ranks),
so that the ranks never disagree. Rank 0 alone logs, evaluates, checkpoints and exports.

Without torchrun (WORLD_SIZE unset or 1) every method is a no-op.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


class DataParallel:
    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @classmethod
    def from_env(cls, device: torch.device) -> DataParallel:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank, world, local)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """cuda:LOCAL_RANK for a CUDA run under torchrun (one GPU per process)."""
        if self.active and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def broadcast_modules(self, modules: dict) -> None:
        """Every rank takes rank 0's parameters and buffers."""
        if not self.active:
            return
        for m in modules.values():
            for t in list(m.state_dict().values()):
                if torch.is_tensor(t):
                    dist.broadcast(t.data if hasattr(t, "data") else t, 0)

    def average_gradients(self, params: list, loss: torch.Tensor) -> float:
        """Average the gradients of `params` over the ranks, in place (one all-reduce, the loss
        riding along). Returns the mean loss over the ranks, the same on every rank."""
        if not self.active:
            return float(loss.detach())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors([g.float() for g in grads] + [loss.detach().float().reshape(1)])
        dist.all_reduce(flat)
        flat /= self.world
        for p, g in zip(params, _unflatten_dense_tensors(flat[:-1], grads)):
            p.grad = g.to(p.dtype)
        return float(flat[-1])

    def agree(self, stop: bool, progress: float) -> tuple[bool, float]:
        """(any rank stops, the largest progress): a decision every rank shares."""
        if not self.active:
            return stop, progress
        t = torch.tensor([float(stop), float(progress)],
                         device=torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0] > 0), float(t[1])

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
