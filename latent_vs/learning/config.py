"""Trainer configuration: dataclasses (one docstring per field) loaded from YAML and validated.

A config file is a YAML mapping whose sections mirror these dataclasses; every key is
optional (defaults below are the paper's where the paper gives one). Unknown keys, wrong
types and out-of-range values raise a UserError naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal, get_args, get_origin, get_type_hints

import yaml

from ..errors import UserError, yaml_error


@dataclass
class SceneSection:
    """The training scene (a textured plane); train on your own scene by changing this."""
    texture: str | None = None
    """image file of the poster (any format OpenCV reads; converted to grey); None = the package's poster.
    A relative path is taken relative to the config file."""
    width_m: float = 0.80
    """poster width [m]"""
    height_m: float = 0.60
    """poster height [m]"""
    goal_depth_m: float = 0.60
    """distance of the desired camera pose to the poster [m] (optical axis perpendicular, centred)"""
    background: int = 0
    """grey level where no poster is seen"""


@dataclass
class CameraSection:
    """Pinhole intrinsics at `width` x `height` (default: the authors' 224 px render). The model
    input is this camera scaled to `image_size` (same field of view)."""
    width: int = 224
    height: int = 224
    px: float = 300.0
    py: float = 300.0
    u0: float = 119.0
    v0: float = 109.0


@dataclass
class PsiSection:
    """ψ, the image encoder (ResNet with weight norm and a group-convolution head)."""
    depth: int = 34
    """ResNet depth: 10, 18 or 34"""
    width: int = 64
    """channels of the first stage (64 = standard ResNet)"""


@dataclass
class PhiSection:
    """φ, the pose encoder (MLP)."""
    hidden: list = field(default_factory=lambda: [32, 64, 128, 64])
    """hidden layer widths (paper: 6→32→64→128→64→32)"""
    activation: str = "relu"
    """relu (paper), silu, elu, tanh, softplus or gelu"""


@dataclass
class DataSection:
    """Training data: poses from tasks.sample_training_poses, images rendered on the fly."""
    samples: int = 100_000
    """poses in the training set (paper: 100K); an epoch visits this many poses"""
    heldout: int = 512
    """held-out poses (other seed) for the per-epoch diagnostics, rendered by the CPU renderer"""
    anchors: int = 64
    """N: random poses per batch (paper: 64)"""
    neighbours: int = 3
    """M: nearest neighbours (eq. 8) of each anchor, found in a random subset (paper: 3)"""
    perturbations: int = 2
    """P: perturbed copies of each image: Gaussian noise, brightness change, random erasing (paper: 2)"""
    neighbour_pool: int = 4096
    """size of the random subset searched for neighbours, per batch"""
    margin: float = 1.2
    """widening of the benchmark's look-at/look-from box and look-at radius for training poses"""
    max_roll_deg: float = 150.0
    """roll of the training starts about the optical axis, up to ± this (benchmark: ±120°)"""
    path_fraction: float = 0.35
    """fraction of training poses on the straight paths r = s·r0 from starts to the goal"""
    decoupled_fraction: float = 0.0
    """fraction of training poses on decoupled paths r = (s_t·t0, s_r·θu0), s_t, s_r ~ U(0, 1)"""
    near_goal_fraction: float = 0.25
    """fraction of training poses near the goal"""
    near_goal_log: bool = True
    """near-goal poses: each component normal with a log-uniform scale (`near_goal_min_mm`–8 cm,
    `near_goal_min_deg`–8°); False: uniform in a ±5 cm box and up to 10°"""
    near_goal_min_mm: float = 0.5
    """smallest translation scale of the log-uniform near-goal poses [mm]"""
    near_goal_min_deg: float = 0.05
    """smallest rotation scale of the log-uniform near-goal poses [deg]"""
    weight_pairs: int = 20000
    """random pose pairs averaged for w_t, w_θu (eq. 8)"""
    sensor_sizes: list = field(default_factory=list)
    """camera image sizes [px] to render training images at, each batch's (GPU) or image's (CPU)
    drawn from the list and brought to ψ's input by the encoder's preprocessing
    (models.prepare_images): ψ then meets the blur of a resized camera image, as in the nodes.
    [] : rendered at ψ's input size only"""
    background_fraction: float = 0.0
    """fraction of training images rendered with a random grey background (uniform 0–255) around
    the poster instead of the scene's: ψ then does not learn the scene's background as a cue
    (the OpenCV renderer only: renderer auto or scene)"""

    def pool(self) -> dict:
        """Keyword arguments of tasks.sample_training_poses (training and held-out poses alike)."""
        return {"margin": self.margin, "max_roll_deg": self.max_roll_deg, "path_fraction": self.path_fraction,
                "decoupled_fraction": self.decoupled_fraction, "near_goal_fraction": self.near_goal_fraction,
                "near_goal_log": self.near_goal_log, "near_goal_min_mm": self.near_goal_min_mm,
                "near_goal_min_deg": self.near_goal_min_deg}


@dataclass
class TrainSection:
    """Optimisation (Adam)."""
    epochs: float = 50
    """passes over `data.samples` poses (paper: 50)"""
    max_steps: int | None = None
    """stop after this many joint steps (overrides epochs when smaller)"""
    lr: float = 1e-4
    """Adam learning rate of ψ (paper: 1e-4)"""
    phi_lr: float | None = None
    """learning rate of φ in the joint stage; None = lr, 0 = φ frozen after stage 1"""
    schedule: Literal["cosine", "constant"] = "cosine"
    """learning-rate decay over the run (by steps or by time budget, whichever is further)"""
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0
    """clip the gradient norm (None: off)"""
    loss_weights: list = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """weights of L_φ,SE(3), L_ψ,φ and Σ L_P in eq. 12 (paper: 1, 1, 1)"""
    goal_fit_weight: float = 0.0
    """weight of a relative goal term (not in the paper; losses.loss_goal_relative): the latent
    error ψ(I) − ψ(I*) the controller sees should equal φ(r) − φ(0), near the goal too"""
    goal_fit_eps: float = 0.05
    """ε of that term (latent units): errors are relative to ‖φ(r) − φ(0)‖ above ε"""
    goal_fit_clean_eps: float | None = None
    """ε of that term on the clean views (None: goal_fit_eps). The controller ends where ψ's slope
    at I* meets φ's: ε = 0.05 (~2 cm / 3° of φ) leaves that slope free below ~1 cm; a small ε
    (0.002, ~0.7 mm) matches it down to sub-mm errors. Perturbed views keep goal_fit_eps: near
    the goal their error is the perturbation itself, which a tiny ε would blow up"""
    fit_weight: float = 0.0
    """weight of a direct term mean ||ψ(I) - φ(r)||² added to eq. 12 (0 = the paper's loss;
    eq. 10 alone leaves ψ(I) loose off the z_r's affine hull)"""
    perturbation_reduction: Literal["mean", "sum"] = "mean"
    """eq. 12's Σ_j L_Pj as printed ("sum") or averaged over the poses ("mean")"""
    phi_pretrain_steps: int = 20000
    """stage 1: φ alone on random-pose batches (eq. 9) before joint training; 0 = skip"""
    phi_pretrain_batch: int = 256
    phi_init: str | None = None
    """start φ from this file (a model's phi.pt, or a run's checkpoint.pt) and skip stage 1: φ
    depends on poses only, so a φ that measured well serves any scene (relative: to the config)"""
    psi_init: str | None = None
    """start ψ from this file (a model's psi.pt, or a run's checkpoint.pt) with the same
    architecture: continue training a shipped model (relative: to the config)"""
    phi_pretrain_lr: float = 1e-3
    """stage 1 Adam learning rate, cosine-decayed"""
    time_budget_min: float | None = None
    """stop training in time to evaluate and export within this many minutes (whole run)"""
    eval_every_steps: int | None = None
    """held-out diagnostics every this many steps (None: every epoch)"""
    checkpoint_every_min: float = 5.0
    log_every_steps: int = 10


@dataclass
class TrainConfig:
    """One training run. `kind` selects the objective (train.OBJECTIVES)."""
    name: str = "model"
    """model name: exported to models/<name>/ by default"""
    kind: Literal["mlvs", "aevs", "pbvs_cnn"] = "mlvs"
    seed: int = 0
    image_size: int = 224
    """ψ input size S (square; a multiple of 32)"""
    latent_dim: int = 32
    """D, the dimension of Z (paper: 32)"""
    scene: SceneSection = field(default_factory=SceneSection)
    camera: CameraSection = field(default_factory=CameraSection)
    psi: PsiSection = field(default_factory=PsiSection)
    phi: PhiSection = field(default_factory=PhiSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    renderer: Literal["auto", "scene", "torch"] = "auto"
    """scene: OpenCV renderer in worker processes; torch: homography + grid_sample on the
    training device; auto: torch on CUDA, scene on the CPU"""
    workers: int = 1
    """worker processes rendering batches with the scene renderer (0 = in the main process)"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 on the CPU"""
    channels_last: bool = True
    """channels-last memory format for ψ on CUDA"""
    compile: bool = False
    """torch.compile ψ on CUDA (falls back to eager if it fails)"""
    threads: int = 1
    """CPU threads for torch in the trainer (CPU training)"""
    objective: dict = field(default_factory=dict)
    """free-form options of the objective (AEVS, PBVS-CNN: see their modules)"""

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def camera_model(self):
        """The model-input camera: `camera` scaled to image_size."""
        from ..camera import Camera
        c = self.camera
        cam = Camera(c.width, c.height, c.px, c.py, c.u0, c.v0)
        return cam if (cam.width, cam.height) == (self.image_size, self.image_size) else cam.scaled(self.image_size)

    def scene_config(self):
        from ..scene import DEFAULT_TEXTURE, SceneConfig
        s = self.scene
        return SceneConfig(texture=s.texture or DEFAULT_TEXTURE, width_m=s.width_m, height_m=s.height_m,
                           goal_depth_m=s.goal_depth_m, background=s.background)

    def heldout_seed(self) -> int:
        """Seed of the held-out poses: the training pool's, offset (another draw of the same pool)."""
        return self.seed + 7919

    def batch_poses(self) -> int:
        """N·(M+1): poses per joint batch."""
        return self.data.anchors * (self.data.neighbours + 1)

    def steps_per_epoch(self) -> int:
        return max(1, -(-self.data.samples // self.batch_poses()))

    def total_steps(self) -> int:
        n = int(round(self.train.epochs * self.steps_per_epoch()))
        if self.train.max_steps is not None:
            n = min(n, self.train.max_steps)
        return max(1, n)


def _check_type(value, tp, where: str):
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    args = [a for a in get_args(tp) if a is not type(None)] if origin is not None else [tp]
    if value is None:
        if type(None) in get_args(tp):
            return None
        raise UserError(f"{where}: a value is required")
    for a in args:
        if a is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if a is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if a is bool and isinstance(value, bool):
            return value
        if a in (str, list, dict) and isinstance(value, a):
            return value
        if a is float and isinstance(value, str):  # YAML reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
    names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
    raise UserError(f"{where}: expected {names}, got {value!r}")


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, f"{where}.{name}")
        else:
            kwargs[name] = _check_type(value, tp, f"{where}.{name}")
    return cls(**kwargs)


def validate(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    from .nets import ACTIVATIONS, DEPTHS
    def bad(key, msg):
        raise UserError(f"{where}: {key} {msg}")
    if cfg.image_size < 32 or cfg.image_size % 32:
        bad("image_size", f"must be a positive multiple of 32, got {cfg.image_size}")
    if cfg.psi.depth not in DEPTHS:
        bad("psi.depth", f"must be one of {sorted(DEPTHS)}, got {cfg.psi.depth}")
    if cfg.psi.width < 1:
        bad("psi.width", "must be >= 1")
    if cfg.phi.activation not in ACTIVATIONS:
        bad("phi.activation", f"must be one of {', '.join(ACTIVATIONS)}, got {cfg.phi.activation!r}")
    if not cfg.phi.hidden or not all(isinstance(h, int) and h > 0 for h in cfg.phi.hidden):
        bad("phi.hidden", f"must be a list of positive integers, got {cfg.phi.hidden}")
    if cfg.latent_dim < 1:
        bad("latent_dim", "must be >= 1")
    d = cfg.data
    for key in ("samples", "heldout", "anchors", "neighbour_pool", "weight_pairs"):
        if getattr(d, key) < 1:
            bad(f"data.{key}", "must be >= 1")
    if d.neighbours < 0 or d.perturbations < 0:
        bad("data.neighbours/perturbations", "must be >= 0")
    if d.neighbours >= d.neighbour_pool:
        bad("data.neighbours", "must be smaller than data.neighbour_pool")
    if d.heldout < 4:
        bad("data.heldout", "must be >= 4")
    if d.margin <= 0 or not 0 <= d.max_roll_deg <= 180:
        bad("data.margin/max_roll_deg", "margin must be > 0 and max_roll_deg in [0, 180]")
    fractions = (d.path_fraction, d.decoupled_fraction, d.near_goal_fraction)
    if min(fractions) < 0 or sum(fractions) > 1:
        bad("data.path_fraction/decoupled_fraction/near_goal_fraction", "must be >= 0 and sum to <= 1")
    from ..tasks import NEAR_GOAL_MAX_DEG, NEAR_GOAL_MAX_MM   # the sampler's upper ends
    if not (0 < d.near_goal_min_mm < NEAR_GOAL_MAX_MM and 0 < d.near_goal_min_deg < NEAR_GOAL_MAX_DEG):
        bad("data.near_goal_min_mm/near_goal_min_deg",
            f"must be in (0, {NEAR_GOAL_MAX_MM:g}) mm and (0, {NEAR_GOAL_MAX_DEG:g}) deg")
    t = cfg.train
    if t.epochs <= 0:
        bad("train.epochs", "must be > 0")
    if t.lr <= 0 or (t.phi_lr is not None and t.phi_lr < 0) or t.phi_pretrain_lr <= 0:
        bad("train.lr", "learning rates must be positive (phi_lr may be 0)")
    if len(t.loss_weights) != 3:
        bad("train.loss_weights", "must be three numbers (eq. 12's three terms)")
    if t.time_budget_min is not None and t.time_budget_min <= 0:
        bad("train.time_budget_min", "must be > 0")
    if not 0 <= d.background_fraction <= 1:
        bad("data.background_fraction", "must be in [0, 1]")
    if d.background_fraction > 0 and cfg.renderer == "torch":
        bad("data.background_fraction", "needs renderer: scene or auto (the OpenCV renderer)")
    if any(not isinstance(v, int) or not 16 <= v <= 4096 for v in cfg.data.sensor_sizes):
        bad("data.sensor_sizes", "must be image sizes in pixels (16–4096)")
    if t.goal_fit_eps <= 0 or (t.goal_fit_clean_eps is not None and t.goal_fit_clean_eps <= 0):
        bad("train.goal_fit_eps", "ε must be > 0 (goal_fit_clean_eps too)")
    if cfg.scene.width_m <= 0 or cfg.scene.height_m <= 0 or cfg.scene.goal_depth_m <= 0:
        bad("scene", "sizes must be positive")
    if not 0 <= cfg.scene.background <= 255:
        bad("scene.background", "must be a grey level 0..255")
    if cfg.workers < 0 or cfg.threads < 1:
        bad("workers/threads", "workers must be >= 0 and threads >= 1")
    return cfg


def apply_override(data: dict, dotted: str, value, where: str = "config") -> None:
    """data["a"]["b"] = value for dotted = "a.b" (sections are created when missing)."""
    keys = dotted.split(".")
    d = data
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise UserError(f"{where}: cannot set {dotted}: {k} is not a section")
    d[keys[-1]] = value


def parse_set(items: list[str]) -> dict:
    """["data.anchors=8", "psi.depth=18"] -> {"data.anchors": 8, "psi.depth": 18} (values parsed as YAML)."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise UserError(f"--set {it!r}: expected KEY=VALUE (e.g. data.anchors=32)")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def load_config(path: str, overrides: dict | None = None) -> TrainConfig:
    """Read and validate a YAML config; overrides {"a.b": value} replace keys first; a
    relative scene.texture is resolved against the file."""
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys")
    for key, value in (overrides or {}).items():
        apply_override(data, key, value, path)
    cfg = _build(TrainConfig, data, path)
    tex = cfg.scene.texture
    if tex:
        if not os.path.isabs(tex):
            tex = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), tex))
        if not os.path.isfile(tex):
            raise UserError(f"{path}: scene.texture not found: {tex}")
        cfg.scene.texture = tex
    for key in ("phi_init", "psi_init"):
        init = getattr(cfg.train, key)
        if init:
            if not os.path.isabs(init):
                init = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), init))
            if not os.path.isfile(init):
                raise UserError(f"{path}: train.{key} not found: {init}")
            setattr(cfg.train, key, init)
    return validate(cfg, path)


def config_from_dict(data: dict, where: str = "config") -> TrainConfig:
    return validate(_build(TrainConfig, data, where), where)


def save_config(cfg: TrainConfig, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    os.replace(tmp, path)
