"""PBVS-CNN baseline (paper II-B, IV-A): a ResNet pose regressor trained with the learned
translation/rotation weighting of Kendall & Cipolla 2017 (homoscedastic uncertainty).

The regressor reads one image and predicts r = (t, θu) = c*r_c, the camera pose seen from the
desired pose (the package's pose convention, interfaces.md). The control law
(latent_vs/control/pbvs_cnn.py) estimates r for the current and the desired image, composes
Δr̂ = (r̂*)^-1 ∘ r̂ and applies v = -λ L_r^-1 Δr̂ (eq. 5).

Loss (Kendall & Cipolla 2017, eq. 7 there; the paper's eq. 4 with β learned):

    L = ||t̂ - t||_γ exp(-s_t) + s_t + ||θû - θu||_γ exp(-s_r) + s_r,     s = log σ²

averaged over the batch, γ = 1 (their choice) or 2.
"""
from __future__ import annotations

import torch
from torch import nn


def kendall_loss(r_hat: torch.Tensor, r: torch.Tensor, s_t: torch.Tensor, s_r: torch.Tensor,
                 norm: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Homoscedastic-uncertainty pose loss. r_hat, r: (B, 6) = (t, θu); s_t, s_r: scalars
    (learned log-variances). Returns (loss, mean translation error, mean rotation error),
    the errors being the batch means of ||·||_norm (before weighting)."""
    if r_hat.shape != r.shape or r.shape[-1] != 6:
        raise ValueError(f"kendall_loss: expected two (B, 6) tensors, got {tuple(r_hat.shape)} and {tuple(r.shape)}")
    e_t = torch.linalg.vector_norm(r_hat[:, :3] - r[:, :3], ord=norm, dim=1).mean()
    e_r = torch.linalg.vector_norm(r_hat[:, 3:] - r[:, 3:], ord=norm, dim=1).mean()
    loss = e_t * torch.exp(-s_t) + s_t + e_r * torch.exp(-s_r) + s_r
    return loss, e_t, e_r


class KendallLoss(nn.Module):
    """kendall_loss with its two learned log-variances as parameters (optimise them with the
    network). Initial values follow Kendall & Cipolla: s_t = 0, s_r = -3."""

    def __init__(self, s_t: float = 0.0, s_r: float = -3.0, norm: int = 1):
        super().__init__()
        self.s_t = nn.Parameter(torch.tensor(float(s_t)))
        self.s_r = nn.Parameter(torch.tensor(float(s_r)))
        self.norm = norm

    def forward(self, r_hat: torch.Tensor, r: torch.Tensor):
        return kendall_loss(r_hat, r, self.s_t, self.s_r, self.norm)


class PoseRegressor(nn.Module):
    """The package's ResNet ψ (nets.ImageEncoder: weight norm, group-convolution head) with a
    6-D output r̂ = (t [m], θu [rad]), scaled by a fixed buffer so that the head's outputs are
    of order 1 for both halves. (B, 1, S, S) normalised images -> (B, 6)."""

    def __init__(self, depth: int = 18, width: int = 64, in_size: int = 224,
                 output_scale=(0.3, 0.3, 0.3, 1.0, 1.0, 1.0)):
        super().__init__()
        from .nets import ImageEncoder
        self.encoder = ImageEncoder(depth=depth, width=width, in_size=in_size, latent_dim=6)
        self.register_buffer("output_scale", torch.as_tensor(output_scale, dtype=torch.float32).reshape(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x) * self.output_scale


# ----------------------------------------------------------------------------- trainer plugin

OPTIONS = {
    "s_t": 0.0,                # initial log-variance of the translation term (Kendall & Cipolla: 0)
    "s_r": -3.0,               # initial log-variance of the rotation term (Kendall & Cipolla: -3)
    "norm": 1,                 # ||·||_γ of the errors: 1 (Kendall & Cipolla) or 2
    "log_variance_lr": 1e-2,   # Adam learning rate of s_t, s_r (they must move by a few units)
    "views": "all",            # train on "all" views (clean + P perturbed copies) or "clean" only
}


class PBVSCNNObjective:
    """Trainer objective (learning/train.py, config `kind: pbvs_cnn`): the pose regressor
    r̂ = f(I) trained with the Kendall & Cipolla loss on every view of each batch (the clean
    render and its P perturbed copies share the target r), options in cfg.objective (OPTIONS).
    Exported: psi.pt (the regressor, (B,1,S,S) -> (B,6)), meta.json (kind "pbvs_cnn",
    latent_dim 6, the learned s_t, s_r)."""
    kind = "pbvs_cnn"

    def __init__(self, cfg, ctx):
        from ..errors import UserError
        unknown = set(cfg.objective) - set(OPTIONS)
        if unknown:
            raise UserError(f"objective: unknown option(s) for pbvs_cnn: {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(OPTIONS)})")
        self.opt = {**OPTIONS, **cfg.objective}
        if self.opt["views"] not in ("all", "clean") or self.opt["norm"] not in (1, 2):
            raise UserError("objective: views must be 'all' or 'clean', norm 1 or 2")
        self.cfg, self.ctx = cfg, ctx
        self.net = PoseRegressor(depth=cfg.psi.depth, width=cfg.psi.width, in_size=cfg.image_size).to(ctx.device)
        if ctx.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.crit = KendallLoss(self.opt["s_t"], self.opt["s_r"], int(self.opt["norm"])).to(ctx.device)

    def modules(self) -> dict:
        return {"regressor": self.net, "kendall": self.crit}

    def param_groups(self) -> list:
        return [{"params": list(self.net.parameters()), "lr": self.cfg.train.lr},
                {"params": list(self.crit.parameters()), "lr": float(self.opt["log_variance_lr"])}]

    def _x(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.ctx.channels_last else x

    def loss(self, batch):
        imgs = batch.images if self.opt["views"] == "all" else batch.images[:, :1]
        V = imgs.shape[1]
        r_hat = self.net(self._x(imgs.flatten(0, 1))).float()
        r = batch.r.float().repeat_interleave(V, 0)
        loss, e_t, e_r = self.crit(r_hat, r)
        return loss, {"err_t": float(e_t.detach()), "err_r": float(e_r.detach()),
                      "s_t": float(self.crit.s_t.detach()), "s_r": float(self.crit.s_r.detach())}

    def _errors(self, x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.cat([self.net(self._x(x[i:i + 128])).float() for i in range(0, len(x), 128)])
        return (torch.linalg.vector_norm(out[:, :3] - r[:, :3], dim=1),
                torch.linalg.vector_norm(out[:, 3:] - r[:, 3:], dim=1))

    def diagnostics(self, held: dict) -> dict:
        r = held["r"].float()
        t_c, r_c = self._errors(held["clean"], r)
        t_p, r_p = self._errors(held["perturbed"], r)
        out = {"err_t_mm": 1000 * float(t_c.mean()), "err_r_deg": float(torch.rad2deg(r_c.mean())),
               "err_t_mm_perturbed": 1000 * float(t_p.mean()), "err_r_deg_perturbed": float(torch.rad2deg(r_p.mean()))}
        h = held.get("heldout")
        if h is not None and h.near_goal.any():
            m = torch.from_numpy(h.near_goal).to(t_c.device)
            out["err_t_mm_near_goal"] = 1000 * float(t_c[m].mean())
            out["err_r_deg_near_goal"] = float(torch.rad2deg(r_c[m].mean()))
        # score: errors in units of 1 cm and 1° (lower is better)
        out["score"] = out["err_t_mm"] / 10.0 + out["err_r_deg"]
        return out

    def export(self, out_dir: str, meta: dict) -> None:
        from ..models import stamp_meta
        from .export import to_torchscript, write_model_dir
        S = self.cfg.image_size
        meta = stamp_meta({**meta, "kind": "pbvs_cnn", "latent_dim": 6,
                            "pbvs_cnn": {"output": "r = (t [m], θu [rad]): the camera pose seen from the desired pose",
                                         "s_t": float(self.crit.s_t.detach()), "s_r": float(self.crit.s_r.detach()),
                                         "options": self.opt}})
        write_model_dir(out_dir, {"psi.pt": to_torchscript(self.net, torch.zeros(1, 1, S, S))}, meta)
