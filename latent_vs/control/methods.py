"""Control laws by name -> factory "module:function" and its keyword arguments: the
benchmark's methods and the controller's `method` (servo.make_law).

A factory is `make(model_dir: str | None = None, **kwargs) -> ControlLaw`. Perturbed goal
images are a benchmark option (--perturbed), not a method."""
from __future__ import annotations

import importlib

METHODS: dict[str, tuple[str, dict]] = {
    "pbvs": ("latent_vs.control.pbvs:make", {}),
    "dvs": ("latent_vs.control.dvs:make", {}),
    "aevs": ("latent_vs.control.aevs:make", {}),
    "pbvs-cnn": ("latent_vs.control.pbvs_cnn:make", {}),
    "mlvs-k1": ("latent_vs.control.mlvs:make", {"k": 1}),
    "mlvs-k50": ("latent_vs.control.mlvs:make", {"k": 50}),
    "mlvs-oracle": ("latent_vs.control.mlvs:make", {"k": 50, "oracle": True}),
    "mlvs-oracle-exact": ("latent_vs.control.mlvs:make", {"oracle": True, "exact_jacobian": True}),
}
ALL = ["pbvs", "dvs", "aevs", "pbvs-cnn", "mlvs-k1", "mlvs-k50"]


def make(name: str, model_dir: str | None = None, **overrides):
    from ..errors import UserError
    if name not in METHODS:
        raise UserError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    target, kwargs = METHODS[name]
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)(model_dir=model_dir, **{**kwargs, **overrides})
