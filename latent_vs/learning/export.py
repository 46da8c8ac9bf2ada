"""Writing model directories from training: networks -> TorchScript -> models.write_model_dir.

The format itself (meta.json, versions, reading, image preprocessing) is latent_vs/models.py;
its names are re-exported here for code written against this module. Also: reading training
checkpoints (`load_checkpoint_file`, `read_state`), which are the trainer's own files.
"""
from __future__ import annotations

import copy
import os
import pickle
import re

import torch

from ..errors import UserError
from ..models import (FORMAT, FORMAT_VERSION, LatentModel, ModelError, git_commit, load_model,  # noqa: F401
                      load_torchscript, portable_texture, prepare_images, read_meta, resolve_texture, stamp_meta)
from ..models import write_model_dir as _write_model_dir
from .nets import strip_weight_norm


# ----------------------------------------------------------------------------- writing

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


def write_model_dir(out_dir: str, files: dict, meta: dict) -> str:
    """models.write_model_dir, with nn.Module values converted by to_torchscript first."""
    files = {k: to_torchscript(v) if isinstance(v, torch.nn.Module) and not isinstance(v, torch.jit.ScriptModule)
             else v for k, v in files.items()}
    return _write_model_dir(out_dir, files, meta)


def export_model(out_dir: str, psi: torch.nn.Module, phi: torch.nn.Module, meta: dict) -> str:
    """Write psi.pt, phi.pt (TorchScript, CPU, weight norm folded) and meta.json atomically.

    meta must hold image.size and latent_dim; format fields, git commit, torch version and
    creation time are added when missing. Returns out_dir."""
    size = int(meta["image"]["size"])
    psi_ts = to_torchscript(psi, torch.zeros(1, 1, size, size))
    phi_ts = to_torchscript(phi, torch.zeros(1, 6))
    meta = stamp_meta({"kind": "mlvs", **meta})
    with torch.no_grad():  # check before writing: the shapes meta promises
        D = int(meta["latent_dim"])
        zi = psi_ts(torch.zeros(2, 1, size, size))
        zr = phi_ts(torch.zeros(2, 6))
    if tuple(zi.shape) != (2, D) or tuple(zr.shape) != (2, D):
        raise ValueError(f"ψ gives {tuple(zi.shape)}, φ gives {tuple(zr.shape)}; meta says latent_dim {D}")
    return write_model_dir(out_dir, {"psi.pt": psi_ts, "phi.pt": phi_ts}, meta)


# ----------------------------------------------------------------------------- training checkpoints

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
