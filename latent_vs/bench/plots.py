"""Benchmark figures (PNG, written atomically): 3-D camera trajectories of each method on one
task, and the pose error over iterations (that task, and the median over all tasks)."""
from __future__ import annotations

import io

from matplotlib.figure import Figure   # no pyplot: no GUI backend, no global figure registry
import numpy as np

from ..scene import SceneConfig
from .report import write_atomic


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buf.getvalue())


def trajectories_3d(path: str, trajectories: dict[str, np.ndarray], goal_pose: np.ndarray,
                    scene: SceneConfig = SceneConfig(), title: str = "", clip_to_scene: bool = False,
                    legend_fontsize: int = 8) -> None:
    """trajectories: label -> (L, 6) pose vectors (or (L, 3) positions) of oT_c (the valid part)
    of one task, all from the same start. clip_to_scene: the view is the box around the poster,
    the start and the goal (with a margin), and a run that flies away leaves it."""
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    w, h = scene.width_m / 2, scene.height_m / 2
    ax.plot([-w, w, w, -w, -w], [-h, -h, h, h, -h], [0, 0, 0, 0, 0], color="0.5", lw=1, label="poster")
    start = np.asarray(next(iter(trajectories.values())))[0, :3]
    lo = hi = None
    if clip_to_scene:
        pts = np.array([[-w, -h, 0], [w, h, 0], start, goal_pose[:3, 3]])
        lo, hi = pts.min(0), pts.max(0)
        lo, hi = lo - 0.25 * (hi - lo) - 0.05, hi + 0.25 * (hi - lo) + 0.05
    for label, tr in trajectories.items():
        p = np.asarray(tr)[:, :3]
        inside = np.ones(len(p), bool) if lo is None else np.all((p >= lo) & (p <= hi), axis=1)
        q = np.where(inside[:, None], p, np.nan)          # leave the view rather than rescale it
        line, = ax.plot(q[:, 0], q[:, 1], q[:, 2], lw=1.5, label=label + ("" if inside.all() else ", leaves the view"))
        if inside[-1]:
            ax.scatter(*p[-1], color=line.get_color(), s=12)
    ax.scatter(*start, color="k", marker="o", s=25, label="start")
    ax.scatter(*goal_pose[:3, 3], color="r", marker="*", s=80, label="goal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_zlabel("z [m]")
    if lo is not None:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
    ax.invert_zaxis()  # the camera sits at z < 0 looking along +z: poster at the bottom
    ax.legend(loc="upper left", fontsize=legend_fontsize)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def error_curves(path: str, curves: dict[str, dict], title: str = "") -> None:
    """curves: label -> {"t": (L,) m, "r": (L,) rad for the plotted task,
    optionally "t_median", "r_median": (L,) over all tasks}. Log scale."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for label, c in curves.items():
        for ax, key, scale in ((axes[0], "t", 100.0), (axes[1], "r", 180.0 / np.pi)):
            line, = ax.plot(np.maximum(np.asarray(c[key]) * scale, 1e-6), lw=1.5, label=f"{label} (task)")
            if c.get(key + "_median") is not None:
                ax.plot(np.maximum(np.asarray(c[key + "_median"]) * scale, 1e-6), lw=1, ls="--",
                        color=line.get_color(), label=f"{label} (median, all tasks)")
    axes[0].set_ylabel("translation error [cm]")
    axes[1].set_ylabel("rotation error [°]")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
