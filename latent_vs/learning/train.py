"""`latent-vs train CONFIG`: train a model from a YAML config and export it to models/<name>/.

    latent-vs train config/train_small.yaml [--out DIR] [--run-dir DIR] [--resume]
                   [--device cpu|cuda] [--time-budget-min X] [--max-steps N]
    latent-vs train config/train_paper.yaml --throughput 150 --throughput-json t.json

The run directory (default runs/<name>/) holds config.yaml, train_log.csv, eval_log.csv,
loss.png and checkpoint.pt; `--resume` continues from its checkpoint. The time budget
always leaves time for the final diagnostics and the export.

Objective plugins
=================
The trainer is generic; what is trained is an *objective*, chosen by the config's `kind`
through `OBJECTIVES` (kind -> "module:Class"): mlvs (this package's metric learning,
objective_mlvs.py), aevs and pbvs_cnn (the baselines). An objective is a class

    class MyObjective:
        kind = "aevs"

        def __init__(self, cfg: TrainConfig, ctx: TrainContext):
            # build the networks on ctx.device; cfg.objective holds free-form options
        def modules(self) -> dict[str, torch.nn.Module]:
            # every network to train and checkpoint, by name (the trainer calls .train()/.eval())
        def param_groups(self) -> list[dict]:
            # torch.optim param groups, each with "lr" (the trainer's schedule scales it);
            # leave out frozen parameters
        def pretrain(self, ctx: TrainContext) -> dict:           # optional
            # a first stage before the joint loop (run once; skipped on resume once done);
            # returns diagnostics stored in meta.json["training"]["pretrain"]
        def loss(self, batch: data.Batch) -> tuple[torch.Tensor, dict[str, float]]:
            # called in train mode under autocast (bf16 on CUDA); return the scalar loss and
            # floats to log (the trainer logs "loss" itself if absent)
        def diagnostics(self, held: dict) -> dict[str, float]:
            # called in eval mode under no_grad, fp32, once per epoch and at the end; `held` is
            # data.HeldOut.tensors(device): {"r": (n,6), "clean": (n,1,S,S), "perturbed": (n,1,S,S)}
            # plus "heldout" (the HeldOut itself); the key "score" (lower is better) is tracked
        def export(self, out_dir: str, meta: dict) -> None:
            # write the model directory (export.export_model or export.write_model_dir);
            # `meta` already holds the common fields (see export.py) to extend

A `data.Batch` holds images (B, P+1, 1, S, S) normalised (view 0 clean, P perturbed
copies), the goal-relative poses r (B, 6), the camera poses T (B, 4, 4), with
B = N·(M+1) poses ordered anchor-major (N anchors each followed by its M nearest neighbours).
`TrainContext` gives the device, autocast dtype, camera, scene, goal pose, w_t, w_r, the
training pose set, a `render(T) -> normalised (B,1,S,S)` on the device, a `log(str)` and the
deadline.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..errors import UserError
from ..scene import Scene, goal_pose
from . import data
from .config import TrainConfig, load_config, save_config
from .distributed import DataParallel
from .losses import data_weights

OBJECTIVES: dict[str, str] = {
    "mlvs": "latent_vs.learning.objective_mlvs:MLVSObjective",
    "aevs": "latent_vs.learning.aevs:AEVSObjective",
    "pbvs_cnn": "latent_vs.learning.pbvs_cnn:PBVSCNNObjective",
}


def get_objective(kind: str):
    """The objective class registered for `kind` (UserError when it is not available)."""
    if kind not in OBJECTIVES:
        raise UserError(f"unknown model kind '{kind}' (known: {', '.join(OBJECTIVES)})")
    mod, cls = OBJECTIVES[kind].split(":")
    try:
        return getattr(importlib.import_module(mod), cls)
    except ModuleNotFoundError as e:
        if e.name and mod.startswith(e.name):
            raise UserError(f"model kind '{kind}' is not available: module {mod} not found") from None
        raise


@dataclass
class TrainContext:
    cfg: TrainConfig
    device: torch.device
    amp_dtype: torch.dtype | None          # bf16 on CUDA, None (fp32) on the CPU
    channels_last: bool
    camera: object                          # camera.Camera of the model input
    scene_config: object                    # scene.SceneConfig
    scene: Scene                            # CPU renderer at the model camera
    goal_pose: np.ndarray                   # oT_c* (4, 4)
    w_t: float                              # eq. 8 weights [m], [rad]
    w_r: float
    poses: data.PoseSet                     # training poses
    run_dir: str
    log: Callable[[str], None] = print
    deadline: float | None = None           # time.time() by which training must stop
    seed: int = 0
    _renderer: object = field(default=None, repr=False)

    def render(self, T) -> torch.Tensor:
        """Normalised clean images (B, 1, S, S) on the device for camera poses T (B, 4, 4)."""
        if self._renderer is None:
            self._renderer = data.TorchRenderer(self.scene, self.device)
        return data.normalise_images(self._renderer.render(torch.as_tensor(np.asarray(T) if not
                                                                          isinstance(T, torch.Tensor) else T)))[:, None]

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def time_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()


# ----------------------------------------------------------------------------- helpers

def resolve_device(name: str) -> torch.device:
    if name in ("auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _atomic_torch_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


class CsvLog:
    """Append-only CSV with a header fixed by the first row (new keys are dropped)."""

    def __init__(self, path: str, resume: bool):
        self.path = path
        self.fields = None
        if resume and os.path.isfile(path):
            with open(path) as f:
                self.fields = next(csv.reader(f), None)
        elif os.path.exists(path):
            os.remove(path)

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k, "")) for k in self.fields])

    def read(self) -> list[dict]:
        if not os.path.isfile(self.path):
            return []
        with open(self.path) as f:
            return list(csv.DictReader(f))


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def _read_columns(path: str) -> dict:
    """A CSV log as {column: [float]} (NaN where a cell is not a number); {} when missing."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    cols: dict = {}
    for r in rows:
        for k, v in r.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(float("nan"))
    return cols


def smooth(values, window: int) -> np.ndarray:
    """Moving average over `window` points (NaNs skipped; the first points average what exists)."""
    v = np.asarray(values, float)
    ok = np.isfinite(v)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    n = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(i - window, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c[i] - c[lo]) / (n[i] - n[lo])


def plot_curves(train_csv: str, eval_csv: str, png: str) -> None:
    """Loss curves as a PNG: the training terms against the step (log scale; each term faint
    as logged and bold as a moving average over ~2% of the run) and the held-out diagnostics."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr, ev = _read_columns(train_csv), _read_columns(eval_csv)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    skip = {"step", "epoch", "elapsed_s", "lr", "images_per_s", "stage"}
    window = max(1, len(tr.get("step", [])) // 50)
    for k, v in tr.items():
        if k not in skip and "step" in tr and np.nanmax(np.abs(v), initial=0) > 0:
            line, = axes[0].plot(tr["step"], v, lw=0.5, alpha=0.25)
            axes[0].plot(tr["step"], smooth(v, window), lw=1.6, color=line.get_color(), label=k)
    axes[0].set_title(f"training loss terms (faint: per log line; bold: mean of {window})")
    axes[0].set_ylabel("loss (log scale)")
    for k, v in ev.items():
        if k not in skip and "step" in ev and not k.startswith("corr") and np.nanmax(np.abs(v), initial=0) > 0:
            axes[1].plot(ev["step"], v, "o-", label=k, ms=3, lw=1)
    axes[1].set_title("held-out diagnostics (lower is better)")
    axes[1].set_ylabel("value (log scale)")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    tmp = png + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png)


def lr_factor(step: int, total: int, time_frac: float, warmup: int, schedule: str) -> float:
    """Linear warm-up, then cosine decay over the run's progress (steps or time, whichever is further)."""
    w = min(1.0, (step + 1) / max(1, warmup))
    if schedule == "constant":
        return w
    p = min(1.0, max(step / max(1, total), time_frac))
    return w * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))


# ----------------------------------------------------------------------------- the run

class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str, run_dir: str, resume: bool = False,
                 time_budget_min: float | None = None, quiet: bool = False):
        self.t_start = time.time()
        self.cfg, self.out_dir, self.run_dir, self.resume, self.quiet = cfg, out_dir, run_dir, resume, quiet
        self.budget_s = 60 * (time_budget_min if time_budget_min is not None else (cfg.train.time_budget_min or 0)) or None
        deadline = os.environ.get("LATENT_VS_DEADLINE_EPOCH")  # set by scripts: counts the start-up too
        if deadline:
            self.budget_s = max(1.0, min(self.budget_s or math.inf, float(deadline) - self.t_start))
        os.makedirs(run_dir, exist_ok=True)
        self.ckpt_path = os.path.join(run_dir, "checkpoint.pt")
        self.dp, self.opt_steps = DataParallel(), 0     # run() joins torchrun's process group, if any
        if resume and not os.path.isfile(self.ckpt_path):
            raise UserError(f"--resume: no checkpoint in {run_dir}")

    def log(self, msg: str) -> None:
        if not self.quiet:
            from tqdm import tqdm
            tqdm.write(msg)

    # ------------------------------------------------------------------ setup
    def setup(self, device: torch.device) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        if device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        else:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        amp = None
        if device.type == "cuda" and cfg.precision in ("auto", "bf16"):
            amp = torch.bfloat16
        elif device.type == "cpu" and cfg.precision == "bf16":
            amp = torch.bfloat16
        camera, scene_cfg = cfg.camera_model(), cfg.scene_config()
        scene = Scene(scene_cfg, camera)  # loads the texture: a bad file fails here, clearly
        t0 = time.time()
        poses = data.PoseSet.sample(cfg.data.samples, cfg.seed, scene_cfg, **cfg.data.pool())
        w_t, w_r = data_weights(poses.r, cfg.data.weight_pairs, seed=cfg.seed)
        self.log(f"[data] {len(poses)} training poses in {time.time() - t0:.1f} s; w_t = {w_t:.4f} m, "
                 f"w_θu = {w_r:.4f} rad (eq. 8)")
        self.ctx = TrainContext(cfg=cfg, device=device, amp_dtype=amp,
                                channels_last=cfg.channels_last and device.type == "cuda",
                                camera=camera, scene_config=scene_cfg, scene=scene, goal_pose=goal_pose(scene_cfg),
                                w_t=w_t, w_r=w_r, poses=poses, run_dir=self.run_dir, log=self.log, seed=cfg.seed)
        t0 = time.time()
        self.held = data.make_heldout(cfg.data.heldout, cfg.heldout_seed(), scene_cfg, camera, **cfg.data.pool())
        self.held_t = self.held.tensors(device)
        self.held_t["heldout"] = self.held
        self.log(f"[data] {cfg.data.heldout} held-out poses rendered in {time.time() - t0:.1f} s")
        self.objective = get_objective(cfg.kind)(cfg, self.ctx)
        groups = self.objective.param_groups()
        for g in groups:
            g["base_lr"] = g["lr"]
        self.opt = torch.optim.Adam(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    def make_source(self, seed: int):
        cfg, ctx = self.cfg, self.ctx
        renderer = cfg.renderer
        if renderer == "auto":
            renderer = "torch" if ctx.device.type == "cuda" and not cfg.data.background_fraction else "scene"
        d = cfg.data
        if renderer == "torch":
            return data.TorchBatchSource(ctx.poses, ctx.scene, d.anchors, d.neighbours, d.perturbations,
                                         d.neighbour_pool, ctx.w_t, ctx.w_r, ctx.device, seed=seed,
                                         sensor_sizes=d.sensor_sizes)
        return data.SceneBatchSource(ctx.poses, ctx.scene_config, ctx.camera, d.anchors, d.neighbours,
                                     d.perturbations, d.neighbour_pool, ctx.w_t, ctx.w_r, ctx.device, seed=seed,
                                     workers=cfg.workers, sensor_sizes=d.sensor_sizes,
                                     background_fraction=d.background_fraction)

    # ------------------------------------------------------------------ checkpoints
    def state(self, step: int, elapsed: float, extra: dict) -> dict:
        return {"modules": {k: m.state_dict() for k, m in self.objective.modules().items()},
                "optimizer": self.opt.state_dict(), "step": step, "elapsed_s": elapsed,
                "w_t": self.ctx.w_t, "w_r": self.ctx.w_r, "config": self.cfg.to_dict(),
                "torch_rng": torch.get_rng_state(), **extra}

    def save_checkpoint(self, step, elapsed, extra) -> None:
        if self.dp.is_main:
            _atomic_torch_save(self.state(step, elapsed, extra), self.ckpt_path)

    def load_checkpoint(self) -> dict:
        from .export import load_checkpoint_file
        ck = load_checkpoint_file(self.ckpt_path, map_location=self.ctx.device)
        if ck.get("config", {}).get("kind") != self.cfg.kind:
            raise UserError(f"{self.ckpt_path}: checkpoint is of kind {ck.get('config', {}).get('kind')!r}, "
                            f"config says {self.cfg.kind!r}")
        mods = self.objective.modules()
        for k, sd in ck["modules"].items():
            if k not in mods:
                raise UserError(f"{self.ckpt_path}: unknown module {k!r} for this objective")
            try:
                mods[k].load_state_dict(sd)
            except RuntimeError as e:
                raise UserError(f"{self.ckpt_path}: {k} does not match the config ({str(e).splitlines()[0]})") from None
        base = [g["base_lr"] for g in self.opt.param_groups]
        self.opt.load_state_dict(ck["optimizer"])
        for g, lr in zip(self.opt.param_groups, base):   # the config's learning rates, not the checkpoint's
            g["base_lr"] = lr
        torch.set_rng_state(ck["torch_rng"].cpu())
        return ck

    # ------------------------------------------------------------------ diagnostics
    def evaluate(self) -> dict:
        """Held-out diagnostics (rank 0 only: {} on the others)."""
        if not self.dp.is_main:
            return {}
        mods = self.objective.modules()
        for m in mods.values():
            m.eval()
        with torch.no_grad():
            diag = self.objective.diagnostics(self.held_t)
        for m in mods.values():
            m.train()
        return {k: float(v) for k, v in diag.items()}

    # ------------------------------------------------------------------ main loop
    def run(self, device: torch.device) -> dict | None:
        """Train, then export. Under torchrun, every rank trains and rank 0 alone logs,
        checkpoints and exports (other ranks return None); see distributed.py."""
        self.dp = DataParallel.from_env(device)
        device = self.dp.device(device)
        self.quiet = self.quiet or not self.dp.is_main
        try:
            self.setup(device)
            step, extra = self._begin()
            step, stop_reason = self._train(step, extra)
            return self._finish(step, extra, stop_reason, device) if self.dp.is_main else None
        finally:
            self.dp.close()

    def elapsed(self) -> float:
        """Training time of the whole run (earlier sessions included)."""
        return self.prev_elapsed + time.time() - self.t_start

    def _begin(self) -> tuple[int, dict]:
        """Logs, resume, the time budget, stage 1; returns (step, checkpoint extras)."""
        cfg, ctx, main = self.cfg, self.ctx, self.dp.is_main
        if main:
            save_config(cfg, os.path.join(self.run_dir, "config.yaml"))
            self.train_log = CsvLog(os.path.join(self.run_dir, "train_log.csv"), self.resume)
            self.eval_log = CsvLog(os.path.join(self.run_dir, "eval_log.csv"), self.resume)
        step, self.prev_elapsed, extra = 0, 0.0, {"pretrain": None, "history": []}
        if self.resume:
            ck = self.load_checkpoint()
            step, self.prev_elapsed = int(ck["step"]), float(ck["elapsed_s"])
            extra = {"pretrain": ck.get("pretrain"), "history": ck.get("history", [])}
            self.log(f"[resume] step {step}, {self.prev_elapsed / 60:.1f} min trained so far")
        # the budget counts the whole run; keep a reserve for the final diagnostics + export
        t0 = time.time()
        first = self.evaluate()
        reserve = 8.0 + 3 * (time.time() - t0)
        self.deadline = None
        if self.budget_s:
            self.deadline = ctx.deadline = self.t_start + (self.budget_s - self.prev_elapsed) - reserve
            if time.time() >= self.deadline:
                self.log(f"[budget] {self.budget_s / 60:.1f} min already used: exporting only")
        self.log("[eval] before training: " + ", ".join(f"{k} {v:.4g}" for k, v in first.items()))
        if extra["pretrain"] is None and hasattr(self.objective, "pretrain") and ctx.time_left() > 0:
            t0 = time.time()    # stage 1 (e.g. φ alone for MLVS)
            pre = self.objective.pretrain(ctx) or {}
            pre = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in pre.items()}
            pre["wall_time_s"] = round(time.time() - t0, 1)
            extra["pretrain"] = pre
            self.log(f"[stage 1] done in {pre['wall_time_s']:.0f} s: " +
                     ", ".join(f"{k} {v:.4g}" for k, v in pre.items() if isinstance(v, float)))
            self.save_checkpoint(step, self.elapsed(), extra)
        self.dp.broadcast_modules(self.objective.modules())   # every rank starts from rank 0's weights
        return step, extra

    def _train(self, step: int, extra: dict) -> tuple[int, str]:
        """Stage 2, the joint training loop; returns (step reached, why it stopped)."""
        cfg, ctx = self.cfg, self.ctx
        total, spe = cfg.total_steps(), cfg.steps_per_epoch()
        self.log(f"[train] {cfg.kind} on {ctx.device}" + (f" x {self.dp.world} ranks" if self.dp.active else "") +
                 f": ψ ResNet-{cfg.psi.depth} w{cfg.psi.width} {cfg.image_size}px, {total} steps ({total / spe:.2f} "
                 f"epochs of {spe} steps, {self.images_per_step()} images/step), "
                 f"{'bf16' if ctx.amp_dtype else 'fp32'}, budget {self.budget_s / 60 if self.budget_s else '-'} min")
        stage2_start = time.time()
        stage2_budget = (self.deadline - stage2_start) if self.deadline else None
        source, self.opt_steps = None, step
        if step < total and ctx.time_left() > 0:   # each rank renders its own poses
            source = self.make_source(cfg.seed * 1000003 + step + 7919 * self.dp.rank)
        for m in self.objective.modules().values():
            m.train()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        self._last_ckpt, self._window = time.time(), (time.time(), 0)
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, desc=f"train {cfg.name}", unit="step", disable=self.quiet,
                   dynamic_ncols=True, mininterval=2.0)
        stop_reason = "steps"
        try:
            while step < total:
                tfrac = 0.0 if not stage2_budget else (time.time() - stage2_start) / max(1e-9, stage2_budget)
                stop, tfrac = self.dp.agree(ctx.time_left() <= 0, tfrac)
                if stop:
                    stop_reason = "time budget"
                    break
                f = lr_factor(step, total, tfrac, cfg.train.warmup_steps, cfg.train.schedule)
                loss, logs = self.train_step(next(source), params, f)
                step += 1
                bar.update(1)
                self._after_step(step, total, loss, logs, extra, bar)
        finally:
            bar.close()
            if source is not None:
                source.close()
        return step, stop_reason

    def images_per_step(self) -> int:
        return self.cfg.batch_poses() * (self.cfg.data.perturbations + 1)

    def train_step(self, batch, params: list, lr_scale: float) -> tuple[float, dict]:
        """One update: loss, backward, gradients averaged over the ranks, clip, Adam.
        Returns (the loss, averaged over the ranks; the objective's log terms)."""
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * lr_scale
        with self.ctx.autocast():
            loss, logs = self.objective.loss(batch)
        self.opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
        mean_loss = self.dp.average_gradients(params, loss)
        if not math.isfinite(mean_loss):
            raise RuntimeError(f"loss is {mean_loss} at step {self.opt_steps + 1}: lower the learning rate")
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        self.opt.step()
        self.opt_steps += 1
        return mean_loss, logs

    def _after_step(self, step: int, total: int, loss: float, logs: dict, extra: dict, bar) -> None:
        """Rank 0: the training log line, held-out diagnostics, periodic checkpoints."""
        if not self.dp.is_main:
            return
        cfg, spe = self.cfg, self.cfg.steps_per_epoch()
        win_t, win_steps = self._window
        self._window = (win_t, win_steps + 1)
        if step % cfg.train.log_every_steps == 0 or step == total:
            now = time.time()
            rate = self._window[1] * self.images_per_step() * self.dp.world / max(1e-9, now - win_t)
            self._window = (now, 0)
            row = {"step": step, "epoch": step / spe, "elapsed_s": self.elapsed(), "lr": self.opt.param_groups[0]["lr"],
                   "images_per_s": rate, "loss": loss}
            row.update({k: v for k, v in logs.items() if k != "loss"})
            self.train_log.write(row)
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")
        if step % (cfg.train.eval_every_steps or spe) == 0 and step < total:
            diag = self.evaluate()
            self.eval_log.write({"step": step, "epoch": step / spe, "elapsed_s": self.elapsed(), **diag})
            extra["history"].append({"step": step, **diag})
            self.log(f"[eval] step {step} (epoch {step / spe:.1f}): " + ", ".join(f"{k} {v:.4g}" for k, v in diag.items()))
        if time.time() - self._last_ckpt > 60 * cfg.train.checkpoint_every_min:
            self.save_checkpoint(step, self.elapsed(), extra)
            self._last_ckpt = time.time()

    def _finish(self, step: int, extra: dict, stop_reason: str, device) -> dict:
        """Rank 0: final checkpoint, diagnostics, loss curves, export."""
        train_wall = self.elapsed()
        self.save_checkpoint(step, train_wall, extra)
        final = self.evaluate()
        self.eval_log.write({"step": step, "epoch": step / self.cfg.steps_per_epoch(), "elapsed_s": self.elapsed(),
                             **final})
        self.log(f"[eval] final (step {step}, stopped by {stop_reason}): " +
                 ", ".join(f"{k} {v:.4g}" for k, v in final.items()))
        try:
            plot_curves(self.train_log.path, self.eval_log.path, os.path.join(self.run_dir, "loss.png"))
        except Exception as e:  # plotting must never lose a trained model
            self.log(f"[warn] loss curves not plotted: {e}")
        meta = self.meta(final, extra, step, train_wall, stop_reason, device)
        if self.dp.active:
            meta["training"]["processes"] = self.dp.world
        if hasattr(self.objective, "latent_norm"):
            meta["latent_norm"] = self.objective.latent_norm(self.held_t)
        self.objective.export(self.out_dir, meta)
        self.log(f"[export] {self.out_dir} ({self.elapsed():.0f} s since start)")
        return meta

    def meta(self, final: dict, extra: dict, step: int, wall: float, stop_reason: str, device) -> dict:
        cfg, ctx = self.cfg, self.ctx
        from .export import portable_texture
        scene = ctx.scene_config.to_dict()
        scene["texture"] = portable_texture(scene["texture"])
        dev = str(device)
        if device.type == "cuda":
            dev += f" ({torch.cuda.get_device_name(device)})"
        cfgd = cfg.to_dict()
        if cfgd["scene"]["texture"]:
            cfgd["scene"]["texture"] = portable_texture(cfgd["scene"]["texture"])
        return {
            "name": cfg.name, "kind": cfg.kind, "latent_dim": cfg.latent_dim,
            "image": {"size": cfg.image_size, "channels": 1, "mean": data.IMAGE_MEAN, "std": data.IMAGE_STD,
                      "note": "x = (I / 255 - mean) / std, grey uint8 I centre-cropped and resized to size x size"},
            "camera": ctx.camera.to_dict(), "scene": scene, "goal_pose": ctx.goal_pose.tolist(),
            "w_t": ctx.w_t, "w_r": ctx.w_r, "config": cfgd,
            "diagnostics": final,
            "training": {"wall_time_s": round(wall, 1), "device": dev, "data_size": len(ctx.poses),
                         "heldout_size": cfg.data.heldout, "steps": step,
                         "epochs": round(step / cfg.steps_per_epoch(), 3),
                         "images_seen": step * cfg.batch_poses() * (cfg.data.perturbations + 1),
                         "stopped_by": stop_reason, "precision": "bf16" if ctx.amp_dtype else "fp32",
                         "pretrain": extra.get("pretrain"), "history": extra.get("history", [])[-20:]},
            "benchmark": {},
        }


# ----------------------------------------------------------------------------- throughput

def measure_throughput(cfg: TrainConfig, device: torch.device, steps: int = 150, warmup: int = 15,
                       log=print) -> dict:
    """Images per second of the joint training step (render + perturb + forward + backward +
    Adam), and of rendering alone, at the config's size, with the trainer's own code."""
    cfg.data.heldout = 4
    cfg.data.samples = min(cfg.data.samples, 20000)
    tr = Trainer(cfg, out_dir="", run_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "latent_vs_throughput"),
                 quiet=True)
    tr.setup(device)
    source = tr.make_source(cfg.seed)
    obj, opt = tr.objective, tr.opt
    params = [p for g in opt.param_groups for p in g["params"]]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def one():
        batch = next(source)
        with tr.ctx.autocast():
            loss, _ = obj.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    for _ in range(min(warmup, steps)):
        one()
    sync()
    t0 = time.time()
    for _ in range(steps):
        one()
    sync()
    dt = time.time() - t0
    t0 = time.time()
    n_render = max(5, steps // 5)
    for _ in range(n_render):
        next(source)
    sync()
    dt_render = time.time() - t0
    source.close()
    ipb = cfg.batch_poses() * (cfg.data.perturbations + 1)
    out = {"config": cfg.name, "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
           "psi": f"ResNet-{cfg.psi.depth} width {cfg.psi.width}", "image_size": cfg.image_size,
           "images_per_step": ipb, "steps": steps, "seconds": round(dt, 3),
           "images_per_s": round(ipb * steps / dt, 1), "steps_per_s": round(steps / dt, 3),
           "render_images_per_s": round(ipb * n_render / dt_render, 1),
           "precision": "bf16" if tr.ctx.amp_dtype else "fp32", "torch": torch.__version__}
    epoch_imgs = cfg.steps_per_epoch() * ipb
    out["epoch_s"] = round(epoch_imgs / out["images_per_s"], 1)
    out["paper_run_h"] = round(50 * 100_000 / cfg.batch_poses() * ipb / out["images_per_s"] / 3600, 3)
    out["note"] = ("epoch = data.samples poses x (P+1) views; paper_run_h = 100K samples x 50 epochs at this "
                   "rate (paper: ~8 h on a Quadro RTX 6000)")
    return out


# ----------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="latent-vs train", description=__doc__.split("Objective plugins")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config (a path, or a name under the package's config/, e.g. train_small.yaml)")
    p.add_argument("--out", help="model directory to export to (default: models/<name> in the current directory)")
    p.add_argument("--run-dir", help="logs, curves and checkpoints (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the config's device")
    p.add_argument("--time-budget-min", type=float, help="whole-run budget in minutes (always leaves time to export)")
    p.add_argument("--max-steps", type=int, help="stop the joint stage after this many steps")
    p.add_argument("--phi-pretrain-steps", type=int, help="override train.phi_pretrain_steps")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--name", help="override the config's name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set data.anchors=32 --set psi.depth=18 (repeatable)")
    p.add_argument("--throughput", type=int, metavar="STEPS",
                   help="only measure training throughput over STEPS steps (no export) and print JSON")
    p.add_argument("--throughput-json", help="with --throughput: also write the JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    a = p.parse_args(argv)
    from .. import paths
    path = a.config if os.path.isfile(a.config) else paths.config_file(a.config)
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {a.config}")
    from .config import parse_set
    cfg = load_config(path, parse_set(a.set))
    if a.seed is not None:
        cfg.seed = a.seed
    if a.name:
        cfg.name = a.name
    if a.max_steps is not None:
        if a.max_steps < 1:
            raise UserError("--max-steps must be >= 1")
        cfg.train.max_steps = a.max_steps
    if a.phi_pretrain_steps is not None:
        cfg.train.phi_pretrain_steps = max(0, a.phi_pretrain_steps)
    if a.time_budget_min is not None and a.time_budget_min <= 0:
        raise UserError("--time-budget-min must be > 0")
    device = resolve_device(a.device or cfg.device)
    if a.throughput:
        res = measure_throughput(cfg, device, steps=a.throughput)
        txt = json.dumps(res, indent=2)
        print(txt)
        if a.throughput_json:
            with open(a.throughput_json + ".tmp", "w") as f:
                f.write(txt)
            os.replace(a.throughput_json + ".tmp", a.throughput_json)
        return 0
    out = a.out or os.path.join("models", cfg.name)
    run_dir = a.run_dir or os.path.join("runs", cfg.name)
    tr = Trainer(cfg, out, run_dir, resume=a.resume, time_budget_min=a.time_budget_min, quiet=a.quiet)
    meta = tr.run(device)
    if meta is None:   # a torchrun rank other than 0: rank 0 exports and reports
        return 0
    d = meta["diagnostics"]
    print(f"exported {out}: " + ", ".join(f"{k} {v:.4g}" for k, v in d.items()) +
          f"; {meta['training']['steps']} steps in {meta['training']['wall_time_s'] / 60:.1f} min on {meta['training']['device']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
