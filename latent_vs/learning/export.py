"""Model directories `models/<name>/`: ψ and φ as TorchScript plus `meta.json`.

A model directory is self-describing: with no training code, `load_model` gives a
`LatentModel` that encodes images of any size (centre crop, resize, normalise as meta says)
and embeds poses. meta.json (format_version 1) holds at least:

    format, format_version, kind, name, latent_dim,
    image      {size, channels, mean, std, note}: x = (I/255 - mean) / std, (B, 1, S, S) float32
    camera     intrinsics of the model input (Camera.to_dict at image.size)
    scene      SceneConfig (texture as "package:<path in latent_vs>" or a file in the model dir)
    goal_pose  oT_c* (4x4),  w_t [m], w_r [rad] (eq. 8),
    psi / phi  architecture, config (the trainer's), git_commit, torch_version, created_utc,
    diagnostics, training {wall_time_s, device, data_size, steps, epochs, ...},
    benchmark  {} (filled later by the benchmark's rows)

Files are written to a temporary directory and renamed into place: a half-written model
directory never looks complete.
"""
from __future__ import annotations

import copy
import datetime
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import tempfile

import cv2
import numpy as np
import torch

from ..camera import Camera
from ..errors import UserError
from ..scene import SceneConfig
from .nets import strip_weight_norm

FORMAT = "latent_vs-model"
FORMAT_VERSION = 1
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../latent_vs
_PKG_PREFIX = "package:"


class ModelError(UserError):
    """A model directory that cannot be used; the message names the file."""


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


def to_torchscript(module: torch.nn.Module, example: torch.Tensor | None = None) -> torch.jit.ScriptModule:
    """A CPU float32 eval-mode TorchScript copy with weight norm folded into plain weights."""
    m = strip_weight_norm(copy.deepcopy(module).cpu().float().eval())
    m = m.to(memory_format=torch.contiguous_format)  # channels-last training leaves NHWC weights
    for p in m.parameters():
        p.requires_grad_(False)
    try:
        return torch.jit.script(m)
    except Exception:
        if example is None:
            raise
        return torch.jit.trace(m, example.cpu().float())


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


def write_model_dir(out_dir: str, files: dict, meta: dict) -> str:
    """Write `files` ({name: TorchScript module | nn.Module | bytes | source file path}) and
    meta.json into out_dir atomically (temp dir + rename). Returns out_dir.

    A scene texture outside the package is copied in as texture<ext>, so that the model
    directory is self-contained (meta.scene.texture then names that file)."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model directory is readable by all
    try:
        meta = json.loads(json.dumps(meta, default=_json_default))  # deep copy, JSON-clean
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
        for name, obj in files.items():
            path = os.path.join(tmp, name)
            if isinstance(obj, torch.jit.ScriptModule):
                obj.save(path)
            elif isinstance(obj, torch.nn.Module):
                to_torchscript(obj).save(path)
            elif isinstance(obj, (bytes, bytearray)):
                with open(path, "wb") as f:
                    f.write(obj)
            elif isinstance(obj, str) and os.path.isfile(obj):
                shutil.copyfile(obj, path)
            else:
                raise TypeError(f"cannot write {name}: {type(obj).__name__}")
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


def export_model(out_dir: str, psi: torch.nn.Module, phi: torch.nn.Module, meta: dict) -> str:
    """Write psi.pt, phi.pt (TorchScript, CPU, weight norm folded) and meta.json atomically.

    meta must hold image.size and latent_dim; format fields, git commit, torch version and
    creation time are added when missing. Returns out_dir."""
    size = int(meta["image"]["size"])
    psi_ts = to_torchscript(psi, torch.zeros(1, 1, size, size))
    phi_ts = to_torchscript(phi, torch.zeros(1, 6))
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta.setdefault("kind", "mlvs")
    meta.setdefault("git_commit", git_commit())
    meta.setdefault("torch_version", torch.__version__)
    meta.setdefault("created_utc", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("benchmark", {})
    with torch.no_grad():  # check before writing: the shapes meta promises
        D = int(meta["latent_dim"])
        zi = psi_ts(torch.zeros(2, 1, size, size))
        zr = phi_ts(torch.zeros(2, 6))
    if tuple(zi.shape) != (2, D) or tuple(zr.shape) != (2, D):
        raise ValueError(f"ψ gives {tuple(zi.shape)}, φ gives {tuple(zr.shape)}; meta says latent_dim {D}")
    return write_model_dir(out_dir, {"psi.pt": psi_ts, "phi.pt": phi_ts}, meta)


# ----------------------------------------------------------------------------- reading

def read_meta(model_dir: str) -> dict:
    """meta.json of a model directory, checked for format and version (ModelError naming the file)."""
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
    v = meta.get("format_version")
    if v != FORMAT_VERSION:
        raise ModelError(f"{path}: format_version {v!r} is not supported by this latent_vs (supports {FORMAT_VERSION})")
    return meta


def load_torchscript(path: str, device: str = "cpu") -> torch.jit.ScriptModule:
    if not os.path.isfile(path):
        raise ModelError(f"model file missing: {path}")
    try:
        m = torch.jit.load(path, map_location=device)
    except Exception as e:
        raise ModelError(f"{path}: cannot load TorchScript ({str(e).splitlines()[0][:200]})") from None
    return m.eval()


def load_checkpoint_file(path: str, map_location="cpu") -> dict:
    """A training checkpoint (torch.save of a dict of tensors, numbers, strings, lists), read
    with weights_only=True: a file that would run code when unpickled (a crafted or foreign
    pickle) is refused with one line, never executed. UserError naming the file otherwise."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it references {m.group(1)}" if m else "it holds Python objects beyond weights"
        raise UserError(f"{path}: refused: {what}, which would run code when loaded; only plain weights "
                        "files are read (torch.load weights_only=True)") from None
    except Exception as e:
        raise UserError(f"{path}: neither a TorchScript model nor a training checkpoint "
                        f"({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})") from None
    if not isinstance(ck, dict):
        raise UserError(f"{path}: not a training checkpoint (a {type(ck).__name__}, not a dict)")
    return ck


def read_state(path: str, name: str) -> dict:
    """Weights of network `name` ("psi" or "phi") from an exported TorchScript file or from a
    training run's checkpoint.pt (its modules[name]); UserError naming the file otherwise."""
    try:
        return {k: v.detach().clone() for k, v in torch.jit.load(path, map_location="cpu").state_dict().items()}
    except Exception:
        pass
    ck = load_checkpoint_file(path)
    if not isinstance(ck, dict) or name not in ck.get("modules", {}):
        raise UserError(f"{path}: training checkpoint without a {name!r} network")
    return ck["modules"][name]


def resolve_texture(texture: str, model_dir: str) -> str:
    if texture.startswith(_PKG_PREFIX):
        return os.path.join(_PKG_DIR, texture[len(_PKG_PREFIX):])
    if not os.path.isabs(texture):
        return os.path.join(model_dir, texture)
    return texture


def prepare_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (B, H, W) or (H, W) of any size -> (B, size, size) uint8: centre crop to a square,
    then resize (area interpolation when shrinking)."""
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
    crop = images[:, y0:y0 + s, x0:x0 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.ascontiguousarray(c), (size, size), interpolation=interp) for c in crop])


class LatentModel:
    """A loaded model directory: ψ and φ (TorchScript) and what meta.json says about them."""

    def __init__(self, model_dir: str, device: str = "cpu"):
        self.model_dir = os.path.abspath(model_dir)
        self.device = device
        self.meta = read_meta(self.model_dir)
        meta_path = os.path.join(self.model_dir, "meta.json")
        try:
            img = self.meta["image"]
            self.image_size = int(img["size"])
            self.mean, self.std = float(img["mean"]), float(img["std"])
            self.latent_dim = int(self.meta["latent_dim"])
            self.camera = Camera.from_dict(self.meta["camera"])
            scene = dict(self.meta["scene"])
            scene["texture"] = resolve_texture(scene["texture"], self.model_dir)
            self.scene = SceneConfig.from_dict(scene)
            self.goal_pose = np.asarray(self.meta["goal_pose"], dtype=np.float64).reshape(4, 4)
            self.w_t, self.w_r = float(self.meta["w_t"]), float(self.meta["w_r"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{meta_path}: missing or bad field ({type(e).__name__}: {e})") from None
        self.psi = load_torchscript(os.path.join(self.model_dir, "psi.pt"), device)
        self.phi = load_torchscript(os.path.join(self.model_dir, "phi.pt"), device)
        S = self.image_size
        self._check_net("psi.pt", self.psi, torch.zeros(1, 1, S, S, device=device),
                        f"does not take (1, 1, {S}, {S}) images as meta.json says")
        self._check_net("phi.pt", self.phi, torch.zeros(1, 6, device=device), "does not take (1, 6) poses")

    def _check_net(self, name: str, net, example: torch.Tensor, what: str) -> None:
        """Run `net` on `example`; it must give (1, latent_dim), else a ModelError naming the file."""
        path = os.path.join(self.model_dir, name)
        try:
            with torch.no_grad():
                z = net(example)
        except Exception as e:
            raise ModelError(f"{path}: {what} ({str(e).splitlines()[0][:160]})") from None
        if tuple(z.shape) != (1, self.latent_dim):
            raise ModelError(f"{path}: outputs {tuple(z.shape)}, meta.json says latent_dim {self.latent_dim}")

    def normalise(self, images_u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(self.device)
        return ((x.float() / 255.0 - self.mean) / self.std)[:, None]

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
    """Load models/<name>/ (or any directory); ModelError naming the file when it cannot."""
    return LatentModel(model_dir, device)
