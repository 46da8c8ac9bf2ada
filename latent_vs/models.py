"""The model-directory contract: `models/<name>/` = TorchScript networks plus `meta.json`.

This module owns the format. The trainer writes through it (learning/export.py turns its
networks into TorchScript, then `write_model_dir`); the control laws, the benchmark, the ROS
nodes and the replay read through it (`load_model`, `load_encoder_model`). It imports nothing
from learning/, control/ or ros/.

meta.json, format_version 1 (a meta.json without format_version is read as version 1):

    format "latent_vs-model", format_version, kind ("mlvs", "aevs", "pbvs_cnn"), name, latent_dim,
    image      {size, channels, mean, std, note}: x = (I/255 - mean) / std, (B, 1, S, S) float32
    camera     intrinsics of the model input (Camera.to_dict at image.size)
    scene      SceneConfig (texture as "package:<path in latent_vs>" or a file in the model dir)
    goal_pose  oT_c* (4x4),  w_t [m], w_r [rad] (eq. 8)          (kind mlvs)
    psi / phi  architecture, config (the trainer's), git_commit, torch_version, created_utc,
    diagnostics, training {...}, latent_norm {...}, benchmark {} (filled by the benchmark)

Files: psi.pt (ψ: image -> latent; every kind), phi.pt (φ: pose -> latent; kind mlvs),
decoder.pt (kind aevs). Written to a temporary directory and renamed into place: a
half-written model directory never looks complete.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .camera import Camera
from .errors import UserError
from .scene import SceneConfig

FORMAT = "latent_vs-model"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))  # .../latent_vs
_PKG_PREFIX = "package:"

# Image normalisation of ψ's input: x = (I / 255 - IMAGE_MEAN) / IMAGE_STD (written to meta.json).
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25


class ModelError(UserError):
    """A model directory that cannot be used; the message names the file."""


# ----------------------------------------------------------------------------- images

def normalise_images(images: torch.Tensor, mean: float = IMAGE_MEAN, std: float = IMAGE_STD) -> torch.Tensor:
    """uint8 or float grey levels in [0, 255], (..., S, S) -> float32 ψ input of the same shape."""
    return (images.float() / 255.0 - mean) / std


def prepare_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (B, H, W) or (H, W) of any size -> (B, size, size): centre crop to a square, then
    resize (area interpolation when shrinking). Images already size x size pass unchanged;
    resized ones come as float32 grey levels, not re-quantised: averaging a k x k block of a
    larger camera image keeps detail finer than one grey level, and that detail is what lets
    the servo end close to the goal (with a 224 px camera MLVS ends ~2x closer than on 64 px
    uint8 images; docs/benchmark.md)."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"expected grey images (B, H, W), got shape {images.shape}")
    B, H, W = images.shape
    if (H, W) == (size, size):
        return images
    s = min(H, W)
    y0, x0 = (H - s) // 2, (W - s) // 2
    crop = images[:, y0:y0 + s, x0:x0 + s].astype(np.float32)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.ascontiguousarray(c), (size, size), interpolation=interp) for c in crop])


# ----------------------------------------------------------------------------- writing

def git_commit(root: str | None = None) -> str:
    """The source commit (with '+dirty' when the tree has changes), or 'unknown'.
    LATENT_VS_GIT_COMMIT overrides it (a copy of the tree without .git, e.g. on a GPU machine)."""
    if os.environ.get("LATENT_VS_GIT_COMMIT"):
        return os.environ["LATENT_VS_GIT_COMMIT"]
    root = root or os.path.dirname(_PKG_DIR)
    try:
        sha = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def stamp_meta(meta: dict) -> dict:
    """meta with the format fields, git commit, torch version, creation time and an empty
    benchmark added where missing (a copy)."""
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta.setdefault("git_commit", git_commit())
    meta.setdefault("torch_version", torch.__version__)
    meta.setdefault("created_utc", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("benchmark", {})
    return meta


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def portable_texture(texture: str) -> str:
    """A texture path as stored in meta.json: inside the package -> 'package:data/...'."""
    p = os.path.abspath(texture)
    if p.startswith(_PKG_DIR + os.sep):
        return _PKG_PREFIX + os.path.relpath(p, _PKG_DIR)
    return p


def resolve_texture(texture: str, model_dir: str) -> str:
    """The inverse of portable_texture, for a meta.json read from model_dir."""
    if texture.startswith(_PKG_PREFIX):
        return os.path.join(_PKG_DIR, texture[len(_PKG_PREFIX):])
    if not os.path.isabs(texture):
        return os.path.join(model_dir, texture)
    return texture


def _portable_scene(meta: dict, tmp: str) -> None:
    """A scene texture outside the package is copied in as texture<ext> (self-contained dir)."""
    scene = meta.get("scene")
    if isinstance(scene, dict) and scene.get("texture"):
        tex = scene["texture"]
        if not tex.startswith(_PKG_PREFIX):
            tex = portable_texture(tex)
        if not tex.startswith(_PKG_PREFIX) and os.path.isfile(tex):
            name = "texture" + (os.path.splitext(tex)[1] or ".png")
            shutil.copyfile(tex, os.path.join(tmp, name))
            tex = name
        scene["texture"] = tex


def _write_file(path: str, obj) -> None:
    if isinstance(obj, torch.jit.ScriptModule):
        obj.save(path)
    elif isinstance(obj, (bytes, bytearray)):
        with open(path, "wb") as f:
            f.write(obj)
    elif isinstance(obj, str) and os.path.isfile(obj):
        shutil.copyfile(obj, path)
    else:
        raise TypeError(f"cannot write {os.path.basename(path)}: {type(obj).__name__} "
                        "(TorchScript, bytes or a file path; learning/export.py converts networks)")


def write_model_dir(out_dir: str, files: dict, meta: dict) -> str:
    """Write `files` ({name: TorchScript module | bytes | source file path}) and meta.json into
    out_dir atomically (temp dir + rename). Returns out_dir."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model directory is readable by all
    try:
        meta = json.loads(json.dumps(meta, default=_json_default))  # deep copy, JSON-clean
        _portable_scene(meta, tmp)
        for name, obj in files.items():
            _write_file(os.path.join(tmp, name), obj)
        meta.setdefault("files", sorted(files))
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2, default=_json_default)
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".old-", dir=parent)
            os.rmdir(old)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return out_dir
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- reading

def read_meta(model_dir: str) -> dict:
    """meta.json of a model directory, checked for format and version (ModelError naming the
    file). A meta.json without format_version is version 1 (the first format had one)."""
    path = os.path.join(model_dir, "meta.json")
    if not os.path.isdir(model_dir):
        raise ModelError(f"model directory not found: {model_dir}")
    if not os.path.isfile(path):
        raise ModelError(f"model file missing: {path}")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a latent_vs model (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    v = meta.setdefault("format_version", 1)
    if v not in SUPPORTED_VERSIONS:
        raise ModelError(f"{path}: format_version {v!r} is not supported by this latent_vs (supports {FORMAT_VERSION})")
    return meta


def meta_kind(model_dir: str) -> str | None:
    """The kind a model directory's meta.json declares, or None when it cannot be read."""
    try:
        with open(os.path.join(model_dir, "meta.json")) as f:
            return json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def load_torchscript(path: str, device: str = "cpu") -> torch.jit.ScriptModule:
    if not os.path.isfile(path):
        raise ModelError(f"model file missing: {path}")
    try:
        m = torch.jit.load(path, map_location=device)
    except Exception as e:
        raise ModelError(f"{path}: cannot load TorchScript ({str(e).splitlines()[0][:200]})") from None
    return m.eval()


def check_net(path: str, net, example: torch.Tensor, latent_dim: int | None, what: str) -> None:
    """Run `net` on `example`; it must give (1, latent_dim), else a ModelError naming the file."""
    try:
        with torch.no_grad():
            z = net(example)
    except Exception as e:
        raise ModelError(f"{path}: {what} ({str(e).splitlines()[0][:160]})") from None
    if latent_dim is not None and tuple(z.shape) != (1, latent_dim):
        raise ModelError(f"{path}: outputs {tuple(z.shape)}, meta.json says latent_dim {latent_dim}")


@dataclass
class ModelInput:
    """What meta.json says about ψ's input and the scene: image size, normalisation, camera."""
    image_size: int
    mean: float
    std: float
    camera: Camera
    scene: SceneConfig

    @classmethod
    def from_meta(cls, meta: dict, model_dir: str) -> ModelInput:
        img = meta["image"]
        scene = dict(meta["scene"])
        scene["texture"] = resolve_texture(scene["texture"], model_dir)
        return cls(int(img["size"]), float(img["mean"]), float(img["std"]), Camera.from_dict(meta["camera"]),
                   SceneConfig.from_dict(scene))


def _read_input(meta: dict, model_dir: str, extra=lambda meta: None):
    try:
        return ModelInput.from_meta(meta, model_dir), extra(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{os.path.join(model_dir, 'meta.json')}: missing or bad field "
                         f"({type(e).__name__}: {e})") from None


class LatentModel:
    """A loaded MLVS model directory: ψ and φ (TorchScript) and what meta.json says about them."""

    def __init__(self, model_dir: str, device: str = "cpu"):
        self.model_dir = os.path.abspath(model_dir)
        self.device = device
        self.meta = read_meta(self.model_dir)

        def goal(meta):
            return (int(meta["latent_dim"]), np.asarray(meta["goal_pose"], dtype=np.float64).reshape(4, 4),
                    float(meta["w_t"]), float(meta["w_r"]))
        inp, (self.latent_dim, self.goal_pose, self.w_t, self.w_r) = _read_input(self.meta, self.model_dir, goal)
        self.image_size, self.mean, self.std = inp.image_size, inp.mean, inp.std
        self.camera, self.scene = inp.camera, inp.scene
        self.psi = load_torchscript(os.path.join(self.model_dir, "psi.pt"), device)
        self.phi = load_torchscript(os.path.join(self.model_dir, "phi.pt"), device)
        S = self.image_size
        check_net(os.path.join(self.model_dir, "psi.pt"), self.psi, torch.zeros(1, 1, S, S, device=device),
                  self.latent_dim, f"does not take (1, 1, {S}, {S}) images as meta.json says")
        check_net(os.path.join(self.model_dir, "phi.pt"), self.phi, torch.zeros(1, 6, device=device),
                  self.latent_dim, "does not take (1, 6) poses")

    def normalise(self, images_u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(self.device)
        return normalise_images(x, self.mean, self.std)[:, None]

    def encode(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """z_I = ψ(I): uint8 grey images (B, H, W) or (H, W) of any size -> float32 (B, D)."""
        imgs = prepare_images(images, self.image_size)
        out = []
        with torch.no_grad():
            for i in range(0, len(imgs), batch):
                out.append(self.psi(self.normalise(imgs[i:i + batch])).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.latent_dim), np.float32)

    def embed_poses(self, r: np.ndarray) -> np.ndarray:
        """z_r = φ(r): poses r = (t, θu) relative to the goal (B, 6) or (6,) -> float32 (B, D)."""
        r = np.asarray(r, dtype=np.float32).reshape(-1, 6)
        with torch.no_grad():
            return self.phi(torch.from_numpy(r).to(self.device)).float().cpu().numpy()

    def __repr__(self) -> str:
        return (f"LatentModel({self.model_dir!r}, {self.image_size}px, D={self.latent_dim}, "
                f"kind={self.meta.get('kind')})")


def load_model(model_dir: str, device: str = "cpu") -> LatentModel:
    """Load an MLVS model directory; ModelError naming the file when it cannot."""
    return LatentModel(model_dir, device)


@dataclass
class EncoderModel:
    """A model directory used through ψ alone (the AEVS encoder, the PBVS-CNN regressor)."""
    psi: torch.jit.ScriptModule    # (B, 1, S, S) normalised image -> (B, D)
    meta: dict
    camera: Camera                 # of the network input (S x S)
    scene: SceneConfig
    image_mean: float
    image_std: float
    path: str


def load_encoder_model(model_dir: str, kind: str, device: str = "cpu") -> EncoderModel:
    """Load psi.pt and meta.json of a model directory that must be of `kind`."""
    meta = read_meta(model_dir)
    meta_path = os.path.join(model_dir, "meta.json")
    if meta.get("kind") != kind:
        raise ModelError(f"{meta_path}: a model of kind {meta.get('kind')!r}, not {kind!r}")
    inp, _ = _read_input(meta, model_dir)
    psi_path = os.path.join(model_dir, "psi.pt")
    psi = load_torchscript(psi_path, device)
    S, D = inp.image_size, meta.get("latent_dim")
    check_net(psi_path, psi, torch.zeros(1, 1, S, S, device=device), None if D is None else int(D),
              f"does not take (1, 1, {S}, {S}) images as meta.json says")
    return EncoderModel(psi, meta, inp.camera, inp.scene, inp.mean, inp.std, model_dir)
