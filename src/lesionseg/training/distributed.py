"""One training process among those `torchrun` starts: its rank, its device, its share, and the collectives."""

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Launch:
    """Where this process sits; a process started without torchrun is rank 0 of 1."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextmanager
def joined_process_group(requested_device: str = "auto") -> Iterator[Launch]:
    """Joins the process group torchrun set up in the environment, and leaves it however training ends.
    `requested_device` (lesionseg.devices): `cpu` keeps a GPU machine's training on the CPU; `cuda:N` picks
    the GPU of a single process (under torchrun each rank takes its LOCAL_RANK's)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested_device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {requested_device}: PyTorch sees no CUDA GPU here; give --device cpu or auto")
    if requested_device.startswith("cuda:") and world_size == 1:
        local_rank = int(requested_device.partition(":")[2])
    on_gpu = torch.cuda.is_available() and requested_device != "cpu"
    device = torch.device("cuda", local_rank) if on_gpu else torch.device("cpu")
    if device.type == "cuda":
        # NCCL and all_gather_object work on the current device, which must be this rank's own GPU.
        torch.cuda.set_device(device)
    launch = Launch(rank=rank, world_size=world_size, device=device)
    if not launch.is_distributed:
        yield launch
        return
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield launch
    finally:
        dist.destroy_process_group()


def own_share(items: Sequence, launch: Launch) -> Sequence:
    """Every `world_size`-th item from this rank's; the shares of all ranks are disjoint and cover `items`."""
    return items[launch.rank :: launch.world_size]


def gather_in_order(share: list, launch: Launch) -> list:
    """The inverse of `own_share`: every rank's share, back in the order of the items they were taken from."""
    if not launch.is_distributed:
        return share
    shares: list[list] = [[] for _ in range(launch.world_size)]
    dist.all_gather_object(shares, share)
    total = sum(len(rank_share) for rank_share in shares)
    return [shares[index % launch.world_size][index // launch.world_size] for index in range(total)]


def gather_objects(value: Any, launch: Launch) -> list:
    """Every rank's `value`, indexed by rank."""
    if not launch.is_distributed:
        return [value]
    values: list[Any] = [None] * launch.world_size
    dist.all_gather_object(values, value)
    return values


def sum_over_ranks(values: list[float], launch: Launch) -> list[float]:
    if not launch.is_distributed:
        return values
    summed = torch.tensor(values, dtype=torch.float64, device=launch.device)
    dist.all_reduce(summed)
    return summed.tolist()


def copy_buffers_from_first_rank(module: torch.nn.Module, launch: Launch) -> None:
    """DDP keeps parameters equal on every rank, but each rank's last step moved its BatchNorm statistics
    on its own share of the batch; rank 0's are the ones it saves, so every rank evaluates with them."""
    if launch.is_distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def wait_for_every_rank(launch: Launch) -> None:
    if launch.is_distributed:
        dist.barrier()
