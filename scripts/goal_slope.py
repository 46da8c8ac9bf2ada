"""ψ's slope at the goal against φ's: A = J_φ⁺ J_ψ (6 x 6) by central differences of rendered
images about the desired pose. MLVS moves by v = −λ L_z⁺ e with L_z from φ, so near the goal
the error decays like exp(−λ A k): eigenvalues of A near 1 converge as fast as PBVS; a small
one is a direction the servo creeps along and the pose estimate reads low.

    python scripts/goal_slope.py models/default [--sensor 224]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from latent_vs.geometry import se3_exp  # noqa: E402
from latent_vs.models import load_model  # noqa: E402
from latent_vs.scene import Scene, goal_pose  # noqa: E402


def slope(model, step_t: float, step_r: float, sensor: int | None = None) -> np.ndarray:
    cam = model.camera.scaled(sensor) if sensor else model.camera
    scene, G = Scene(model.scene, cam), goal_pose(model.scene)
    h = np.array([step_t] * 3 + [step_r] * 3)
    J_psi, J_phi = [], []
    for i in range(6):
        v = np.zeros((2, 6))
        v[0, i], v[1, i] = h[i], -h[i]
        z = model.encode(np.stack([scene.render(T) for T in G[None] @ se3_exp(v)])).astype(np.float64)
        zr = model.embed_poses(v).astype(np.float64)            # r = (t, θu) of G⁻¹ T = exp(v)
        J_psi.append((z[0] - z[1]) / (2 * h[i]))
        J_phi.append((zr[0] - zr[1]) / (2 * h[i]))
    return np.linalg.pinv(np.array(J_phi).T) @ np.array(J_psi).T


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--sensor", type=int, help="render this many px and resize as the encoder does")
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.model_dir, "meta.json")):
        print(f"goal_slope: no model in {a.model_dir}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    model = load_model(a.model_dir)
    for t, r in ((5e-4, np.deg2rad(0.05)), (5e-3, np.deg2rad(0.5))):
        A = slope(model, t, r, a.sensor)
        ev = np.sort(np.linalg.eigvals(A).real)
        print(f"steps {t * 1e3:.1f} mm / {np.degrees(r):.2f}°: eigenvalues of A {np.round(ev, 2).tolist()}, "
              f"diagonal {np.round(np.diag(A), 2).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
