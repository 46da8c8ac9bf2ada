"""AEVS baseline (paper II-C; Felton et al., RA-L 2022): a convolutional autoencoder whose
latent vector z_I is the visual feature servoed on.

- Encoder: the package's ResNet ψ (`nets.ImageEncoder`: weight norm, group-convolution head),
  latent size 32 as in the paper's comparison (III-C: "for both AEVS and PBVS-CNN, we use the
  network and data described in Section III-C").
- Decoder: the mirror image: a linear layer to the final S/32 x S/32 feature map, then one
  stage of weight-normalised residual blocks per encoder stage, each after a 2x nearest
  upsampling, and two more 2x upsamplings (undoing the stem's stride and max-pool) to a 1-channel
  image in the encoder's normalised grey levels.
- Objective: reconstruction, mean squared error on the normalised image.

The servo law lives in latent_vs/control/aevs.py: L_zI = (∂z/∂I)(∂I/∂r) (eq. 6), the encoder
Jacobian applied to the photometric interaction matrix by forward-mode differentiation
(`control.aevs.latent_interaction_matrix`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .nets import DEPTHS, BasicBlock, ImageEncoder


class ImageDecoder(nn.Module):
    """(B, latent_dim) -> (B, 1, S, S) normalised image; the mirror of ImageEncoder."""

    def __init__(self, depth: int = 18, width: int = 64, in_size: int = 224, latent_dim: int = 32):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth {depth} not supported (choose from {sorted(DEPTHS)})")
        if in_size < 32 or in_size % 32:
            raise ValueError(f"image size {in_size} must be a multiple of 32 (>= 32)")
        self.depth, self.width, self.in_size, self.latent_dim = int(depth), int(width), int(in_size), int(latent_dim)
        self.final = in_size // 32
        c_top = width * 2 ** (len(DEPTHS[depth]) - 1)
        self.fc = nn.Linear(self.latent_dim, c_top * self.final * self.final)
        self.c_top = c_top
        stages: list[nn.Module] = []
        cin = c_top
        for stage in reversed(range(len(DEPTHS[depth]))):
            cout = width * 2 ** max(stage - 1, 0)
            n = DEPTHS[depth][stage]
            blocks = [BasicBlock(cin if i == 0 else cout, cout) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out = nn.Conv2d(cin, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc(z)).reshape(z.shape[0], self.c_top, self.final, self.final)
        for i, stage in enumerate(self.stages):
            if i > 0:  # the encoder's first stage keeps the resolution; the others halve it
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = stage(x)
        x = F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)  # stem: stride 2 + max-pool
        return self.out(x)


class AutoEncoder(nn.Module):
    """encoder + decoder; forward returns (z, reconstruction)."""

    def __init__(self, depth: int = 18, width: int = 64, in_size: int = 224, latent_dim: int = 32):
        super().__init__()
        self.encoder = ImageEncoder(depth=depth, width=width, in_size=in_size, latent_dim=latent_dim)
        self.decoder = ImageDecoder(depth=depth, width=width, in_size=in_size, latent_dim=latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error between reconstruction and input (both normalised images)."""
    return F.mse_loss(x_hat, x)


# ----------------------------------------------------------------------------- trainer plugin

class AEVSObjective:
    """Trainer objective (learning/train.py, config `kind: aevs`): the autoencoder trained to
    reconstruct the clean training images (view 0 of each batch; configs set
    data.perturbations = 0 and data.neighbours = 0, so a batch is N random poses).

    cfg.objective options: none yet (reserved). Exported files: psi.pt (the encoder, what the
    AEVS law servos with), decoder.pt, meta.json (kind "aevs")."""
    kind = "aevs"

    def __init__(self, cfg, ctx):
        unknown = set(cfg.objective) - set()
        if unknown:
            from ..errors import UserError
            raise UserError(f"objective: unknown option(s) for aevs: {', '.join(sorted(unknown))}")
        self.cfg, self.ctx = cfg, ctx
        self.ae = AutoEncoder(depth=cfg.psi.depth, width=cfg.psi.width, in_size=cfg.image_size,
                              latent_dim=cfg.latent_dim).to(ctx.device)
        if ctx.channels_last:
            self.ae = self.ae.to(memory_format=torch.channels_last)

    def modules(self) -> dict:
        return {"autoencoder": self.ae}

    def param_groups(self) -> list:
        return [{"params": list(self.ae.parameters()), "lr": self.cfg.train.lr}]

    def _x(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.ctx.channels_last else x

    def loss(self, batch):
        x = self._x(batch.images[:, 0])                      # clean views (B, 1, S, S)
        _, x_hat = self.ae(x)
        loss = reconstruction_loss(x_hat.float(), x.float())
        return loss, {"mse": float(loss.detach())}

    def diagnostics(self, held: dict) -> dict:
        x = held["clean"]
        mse = []
        for i in range(0, len(x), 128):
            _, x_hat = self.ae(self._x(x[i:i + 128]))
            mse.append(F.mse_loss(x_hat.float(), x[i:i + 128].float(), reduction="none").mean((1, 2, 3)))
        mse = torch.cat(mse)
        out = {"recon_mse": float(mse.mean()), "score": float(mse.mean())}
        near = held.get("heldout")
        if near is not None and near.near_goal.any():
            out["recon_mse_near_goal"] = float(mse[torch.from_numpy(near.near_goal).to(mse.device)].mean())
        return out

    def export(self, out_dir: str, meta: dict) -> None:
        from ..models import stamp_meta
        from .export import to_torchscript, write_model_dir
        S = self.cfg.image_size
        meta = stamp_meta({**meta, "kind": "aevs", "latent_dim": self.cfg.latent_dim,
                            "aevs": {"note": "psi.pt is the encoder; decoder.pt maps z back to a normalised "
                                             "image; servo with latent_vs.control.aevs (eq. 6)"}})
        enc = to_torchscript(self.ae.encoder, torch.zeros(1, 1, S, S))
        dec = to_torchscript(self.ae.decoder, torch.zeros(1, self.cfg.latent_dim))
        write_model_dir(out_dir, {"psi.pt": enc, "decoder.pt": dec}, meta)
