"""Data-parallel training (`torchrun --nproc_per_node=N ... train`, learning/distributed.py):
two CPU ranks (gloo) on a toy config stay in sync, and match one process that trains on
both ranks' batches at once (the mean of the two losses: the same global batch)."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config", "train_small.yaml")
TOY = {"data.samples": 400, "data.heldout": 16, "data.anchors": 4, "data.neighbour_pool": 64, "psi.width": 4,
       "train.phi_pretrain_steps": 0, "renderer": "torch", "train.grad_clip": 1.0}
STEPS, SEED = 3, 11


def _trainer(tmp: str):
    from latent_vs.learning.train import Trainer, load_config
    tr = Trainer(load_config(CONFIG, TOY), os.path.join(tmp, "m"), os.path.join(tmp, "run"), quiet=True)
    tr.setup(torch.device("cpu"))
    return tr


def _params(tr) -> list:
    return [p for g in tr.opt.param_groups for p in g["params"]]


def _rank(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from latent_vs.learning.distributed import DataParallel
    torch.manual_seed(100 + rank)          # different initial weights: the broadcast must fix them
    tr = _trainer(os.path.join(tmp, f"r{rank}"))
    if rank == 1:
        with torch.no_grad():
            for p in _params(tr):
                p.add_(0.01)
    tr.dp = DataParallel.from_env(torch.device("cpu"))
    ref = torch.load(os.path.join(tmp, "init.pt"))
    if rank == 0:                            # rank 0 holds the reference's initial weights
        for name, m in tr.objective.modules().items():
            m.load_state_dict(ref[name])
    tr.dp.broadcast_modules(tr.objective.modules())
    source = tr.make_source(SEED + rank)     # each rank renders its own poses
    losses = [tr.train_step(next(source), _params(tr), 1.0)[0] for _ in range(STEPS)]
    source.close()
    torch.save({"params": [p.detach().clone() for p in _params(tr)], "losses": losses},
               os.path.join(tmp, f"rank{rank}.pt"))
    tr.dp.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_ranks_stay_in_sync_and_match_one_process_on_the_global_batch(tmp_path):
    torch.set_num_threads(1)
    tmp = str(tmp_path)
    ref = _trainer(os.path.join(tmp, "ref"))
    torch.save({k: m.state_dict() for k, m in ref.objective.modules().items()}, os.path.join(tmp, "init.pt"))
    mp.start_processes(_rank, args=(2, _free_port(), tmp), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in (0, 1))
    for a, b in zip(r0["params"], r1["params"]):        # in sync: bit for bit
        assert torch.equal(a, b)
    assert r0["losses"] == r1["losses"]
    # one process, the same global batch: both ranks' batches, the mean of their losses
    sources = [ref.make_source(SEED + r) for r in (0, 1)]
    params = _params(ref)
    mean_losses = []
    for _ in range(STEPS):
        batches = [next(s) for s in sources]
        ref.opt.zero_grad(set_to_none=True)
        loss = sum(ref.objective.loss(b)[0] for b in batches) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        ref.opt.step()
        mean_losses.append(float(loss.detach()))
    for s in sources:
        s.close()
    np.testing.assert_allclose(r0["losses"], mean_losses, rtol=1e-5)
    for a, b in zip(r0["params"], params):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_torchrun_two_ranks_trains_and_rank0_exports(tmp_path):
    """The command the README gives, on two CPU processes: one model directory, one log."""
    out, run = tmp_path / "m", tmp_path / "run"
    sets = [x for k, v in {**TOY, "train.log_every_steps": 1, "train.eval_every_steps": 2}.items()
            for x in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           "-m", "latent_vs.cli", "train", CONFIG, "--out", str(out), "--run-dir", str(run), "--max-steps", "3",
           "--quiet", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    p = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    from latent_vs.models import load_model
    meta = load_model(str(out)).meta
    assert meta["training"]["steps"] == 3 and meta["training"]["processes"] == 2
    rows = (run / "train_log.csv").read_text().splitlines()
    assert len(rows) == 1 + 3                      # rank 0 alone writes the log
