"""What a cell sees of where it runs: in a worker (a local pool's process or a cluster job) the
device it computes on, and modules and tensors that travel between processes on the CPU.

    model = arrive(shared["teacher"])   # in a worker: moved to its device; in the serial path, unchanged
    return to_cpu(result)               # what a worker sends back
"""

from __future__ import annotations

import copy

import torch

from .device import current_device, set_device

_worker: str | None = None   # in a worker: the device it computes on; None in the parent


def start_worker(device: str, threads: int) -> None:
    """Make this process a worker (a pool's, or a cluster job) that computes on `device` with
    `threads` torch threads; `arrive` then moves what a cell receives there."""
    global _worker
    _worker = device
    set_device(device)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))  # "cuda" without an index means this one too
    torch.set_num_threads(threads)


def to_cpu(obj):
    """`obj` with every module and tensor in it (nested in tuples, lists and dicts) on the CPU; a
    module or tensor on another device is copied, never moved in place."""
    if isinstance(obj, torch.nn.Module):
        on_cpu = all(t.device.type == "cpu" for t in [*obj.parameters(), *obj.buffers()])
        return obj if on_cpu else copy.deepcopy(obj).cpu()
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    return obj


def arrive(module):
    """A module a cell received: in a worker, moved to the worker's device (it travelled on the
    CPU); in the serial path, unchanged."""
    return module.to(current_device()) if _worker is not None and module is not None else module
