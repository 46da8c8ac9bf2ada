"""Thread settings of the latency-bound programs (the nodes, the demo, replay, latency),
applied where each program starts rather than by environment variables set before imports.

On a loaded 2-core PC two busy BLAS or OpenMP threads collapse: the control step's matrices
are tiny, so NumPy's BLAS runs on one thread (threadpoolctl, effective whenever it is
called), torch on the threads the program asks for, and OpenMP threads wait passively
(OMP_WAIT_POLICY, read when torch starts: the programs import torch after this runs).
"""
from __future__ import annotations

import os


def quiet_threads(torch_threads: int | None = None) -> None:
    """One BLAS thread; torch on `torch_threads` (None: leave it); passive OpenMP waiting."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from threadpoolctl import threadpool_limits
    threadpool_limits(1, user_api="blas")
    if torch_threads is not None:
        import torch
        torch.set_num_threads(int(torch_threads))


def local_discovery() -> None:
    """ROS 2 discovery on this machine only (before rclpy.init): the demo and the latency
    harness must never reach a real arm listening on the network."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
