"""The MLVS objective (paper III-B, III-C): ψ and φ trained jointly on eq. 12, after a first
stage that trains φ alone (eq. 9 on random-pose batches; phi_train.train_phi).

Stage 1 matters most: φ's global geometry (no fold where a far pose embeds near z*) decides
whether the control law converges (design page, prototype facts). Stage 2 then fits ψ to φ
(eq. 10) with perturbation invariance (eq. 11), φ's learning rate being `train.phi_lr`
(0 keeps φ frozen). Two terms not in the paper, off by default: `fit_weight` (ψ(I) onto φ(r),
losses.loss_fit) and `goal_fit_weight` (the latent error ψ(I) − ψ(I*) onto φ(r) − φ(0),
relative to its size, losses.loss_goal_relative): without the latter, a CPU-sized ψ stayed
flat around I* (its latent error near the goal pointed ~65° off φ's) and never converged.
`train.phi_init` / `train.psi_init` start from saved networks instead (stage 1 skipped).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

from .config import TrainConfig
from .losses import loss_goal_relative, loss_phi_se3, pairwise_latent_distance, se3_pair_distance, total_loss
from .nets import ImageEncoder, PoseNet, count_parameters


def fallback_train_phi(phi, steps: int, batch_size: int, lr: float, w_t: float, w_r: float, poses_r: np.ndarray,
                       device="cpu", seed: int = 0, log=None, deadline: float | None = None) -> dict:
    """Eq. 9 on batches of random poses (far-field pairs), Adam with cosine decay — used when
    phi_train (the tuned recipe) cannot be imported."""
    gen = torch.Generator().manual_seed(seed)
    pool = torch.as_tensor(poses_r, dtype=torch.float32, device=device)
    opt = torch.optim.Adam(phi.parameters(), lr=lr)
    zero = torch.zeros(1, 6, device=device)
    run, t0, step = 0.0, time.time(), 0
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(len(pool), (batch_size,), generator=gen).to(device)
        r = torch.cat([zero, pool[idx]])
        d = se3_pair_distance(r, r, w_t, w_r)
        z = phi(r)
        loss = loss_phi_se3(z, d)  # eq. 9
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run = loss.item() if step == 1 else 0.98 * run + 0.02 * loss.item()
        if log and step % 1000 == 0:
            log(step, {"loss_phi": run})
        if deadline is not None and time.time() > deadline:
            break
    return {"steps": step, "seconds": time.time() - t0, "final_loss": run, "recipe": "fallback"}


def fit_affine(F: torch.Tensor, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares W (D, C), b (D,) with F Wᵀ + b ≈ Z, for F (n, C) that may be rank-deficient
    (dead ReLU channels): an SVD-based solver (torch's default 'gelsy' returned a far worse fit
    on such F)."""
    A = torch.cat([F, torch.ones(len(F), 1, dtype=F.dtype, device=F.device)], 1).cpu().double()
    sol = torch.linalg.lstsq(A, Z.cpu().double(), driver="gelsd").solution    # (C+1, D)
    return sol[:-1].T, sol[-1]


class MLVSObjective:
    kind = "mlvs"

    def __init__(self, cfg: TrainConfig, ctx):
        self.cfg, self.ctx = cfg, ctx
        dev = ctx.device
        self.psi = ImageEncoder(cfg.psi.depth, cfg.psi.width, cfg.image_size, cfg.latent_dim).to(dev)
        # φ's fixed input scaling: translations in units of w_t, rotations in units of w_θu
        scale = (1 / ctx.w_t,) * 3 + (1 / ctx.w_r,) * 3
        self.phi = PoseNet(tuple(cfg.phi.hidden), cfg.latent_dim, cfg.phi.activation, input_scale=scale).to(dev)
        if ctx.channels_last:
            self.psi = self.psi.to(memory_format=torch.channels_last)
        self.psi_features = self.psi.features
        if cfg.compile and dev.type == "cuda":
            try:
                self.psi_features = torch.compile(self.psi.features)
            except Exception as e:  # compile is an optimisation only
                ctx.log(f"[warn] torch.compile failed, running eager: {e}")
        for key, net in (("psi_init", self.psi), ("phi_init", self.phi)):
            path = getattr(cfg.train, key)
            if path:
                from ..errors import UserError
                from .export import read_state
                from .nets import load_weights
                try:
                    load_weights(net, read_state(path, key[:3]), path)
                except ValueError as e:
                    raise UserError(str(e)) from None
                ctx.log(f"[model] {key[:3]} starts from {path}")
        if cfg.train.psi_init and cfg.train.phi_init:
            self._align_head(ctx)
        # the clean goal image I* (for the relative goal term and the goal diagnostic)
        self.goal_image = ctx.render(np.asarray(ctx.goal_pose)[None]).float()
        self.phi_lr = cfg.train.lr if cfg.train.phi_lr is None else cfg.train.phi_lr
        self.weights = tuple(cfg.train.loss_weights)
        ctx.log(f"[model] ψ ResNet-{cfg.psi.depth} width {cfg.psi.width} at {cfg.image_size} px: "
                f"{count_parameters(self.psi) / 1e6:.2f} M parameters; φ {[6, *cfg.phi.hidden, cfg.latent_dim]} "
                f"{cfg.phi.activation}")

    @torch.no_grad()
    def _align_head(self, ctx, n: int = 4096) -> None:
        """ψ and φ from different runs embed into different (near-isometric) latent spaces:
        refit ψ's last linear layer by least squares on n rendered training poses so that
        ψ(I) ≈ φ(r) before training continues (the trunk's features are kept)."""
        gen = np.random.default_rng(ctx.seed + 17)
        idx = gen.choice(len(ctx.poses), size=min(n, len(ctx.poses)), replace=False)
        self.psi.eval()
        feats, target = [], []
        for i in range(0, len(idx), 256):
            j = idx[i:i + 256]
            x = ctx.render(ctx.poses.T[j]).float()
            feats.append(torch.relu(self.psi.head(self.psi.features(x))).flatten(1).double())
            target.append(self.phi(torch.as_tensor(ctx.poses.r[j], device=x.device)).double())
        F, Z = torch.cat(feats), torch.cat(target)
        before = (self.psi.fc(F.float()).double() - Z).norm(dim=1).mean()
        W, b = fit_affine(F, Z)
        self.psi.fc.weight.copy_(W.float())
        self.psi.fc.bias.copy_(b.float())
        after = (self.psi.fc(F.float()).double() - Z).norm(dim=1).mean()
        self.psi.train()
        ctx.log(f"[model] ψ's last layer refit to φ on {len(F)} poses: mean ‖ψ(I) − φ(r)‖ {before:.3f} -> {after:.3f}")

    def modules(self) -> dict:
        return {"psi": self.psi, "phi": self.phi}

    def param_groups(self) -> list[dict]:
        groups = [{"params": list(self.psi.parameters()), "lr": self.cfg.train.lr, "name": "psi"}]
        if self.phi_lr > 0:
            groups.append({"params": list(self.phi.parameters()), "lr": self.phi_lr, "name": "phi"})
        return groups

    # ------------------------------------------------------------------ stage 1
    def pretrain(self, ctx) -> dict:
        t = self.cfg.train
        if t.phi_init:  # a φ that measured well: stage 1 is done
            self._freeze_phi_if_asked()
            return {"steps": 0, "recipe": f"phi_init: {os.path.basename(t.phi_init)}"}
        if t.phi_pretrain_steps <= 0:
            self._freeze_phi_if_asked()
            return {"steps": 0}
        ctx.log(f"[stage 1] φ alone: {t.phi_pretrain_steps} steps of {t.phi_pretrain_batch} random poses, "
                f"Adam {t.phi_pretrain_lr:g} cosine")

        def log(step, logs):
            ctx.log(f"[stage 1] step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))

        try:
            from .phi_train import train_phi
        except Exception as e:  # not there, or its imports fail on this machine
            ctx.log(f"[stage 1] phi_train not usable ({type(e).__name__}: {e}); using the fallback recipe")
            train_phi = None
        self.phi.train()
        steps = t.phi_pretrain_steps
        if ctx.deadline is not None:  # keep stage 1 within ~35% of the time left (probe its speed)
            import copy
            probe = fallback_train_phi(copy.deepcopy(self.phi), 30, t.phi_pretrain_batch, t.phi_pretrain_lr,
                                       ctx.w_t, ctx.w_r, ctx.poses.r[:5000], ctx.device, ctx.seed)
            per_step = probe["seconds"] / max(1, probe["steps"])
            cap = int(0.35 * ctx.time_left() / max(per_step, 1e-5))
            if cap < steps:
                ctx.log(f"[stage 1] time budget: {steps} -> {max(cap, 100)} steps ({per_step * 1e3:.2f} ms/step)")
                steps = max(cap, 100)
        if train_phi is not None:
            import inspect
            kw = dict(steps=steps, batch_size=t.phi_pretrain_batch, lr=t.phi_pretrain_lr,
                      w_t=ctx.w_t, w_r=ctx.w_r, device=str(ctx.device), seed=ctx.seed, log=log)
            params = inspect.signature(train_phi).parameters
            if "scene" in params:
                kw["scene"] = ctx.scene_config
            if "pool" in params:
                kw["pool"] = self.cfg.data.pool()
            kw.update({k: v for k, v in self.cfg.objective.get("phi_train", {}).items() if k in params})
            try:
                out = train_phi(self.phi, **kw)
                out["recipe"] = "phi_train.train_phi"
            except Exception as e:  # never lose a GPU run to stage 1's extras: fall back
                ctx.log(f"[stage 1] phi_train.train_phi failed ({type(e).__name__}: {e}); using the fallback recipe")
                train_phi = None
        if train_phi is None:
            self.phi.to(ctx.device).float().train()
            out = fallback_train_phi(self.phi, steps, t.phi_pretrain_batch, t.phi_pretrain_lr,
                                     ctx.w_t, ctx.w_r, ctx.poses.r, ctx.device, ctx.seed, log, ctx.deadline)
        self.phi.to(ctx.device).train()
        self._freeze_phi_if_asked()
        return {k: v for k, v in out.items() if isinstance(v, (int, float, str))}

    def _freeze_phi_if_asked(self) -> None:
        if self.phi_lr == 0:  # φ is not in the optimiser: no gradients for it in stage 2
            for p in self.phi.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------------ stage 2
    def loss(self, batch):
        x = batch.flat_images()
        t = self.cfg.train
        if t.goal_fit_weight:  # I* rides along as the batch's last image
            x = torch.cat([x, self.goal_image.to(x.dtype)])
        if self.ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f = self.psi_features(x)
        with torch.autocast(x.device.type, enabled=False):  # head, φ and losses in fp32
            z_I = self.psi.embed(f.float())
            z_r = self.phi(batch.r.float())
            with torch.no_grad():
                d = se3_pair_distance(batch.r, batch.r, self.ctx.w_t, self.ctx.w_r)  # eq. 8
            if t.goal_fit_weight:
                z_I, z_I_goal = z_I[:-1], z_I[-1:]
            L, logs = total_loss(z_r, d, z_I, weights=self.weights, reduction=t.perturbation_reduction,
                                 fit_weight=t.fit_weight)
            if t.goal_fit_weight:
                V = len(z_I) // len(z_r)
                z_r_goal = self.phi(torch.zeros(1, 6, device=z_r.device))
                eps = torch.full((len(z_I),), t.goal_fit_eps, device=z_I.device)
                if t.goal_fit_clean_eps is not None:
                    eps[::V] = t.goal_fit_clean_eps            # each pose's V views: the clean one first
                l_goal = loss_goal_relative(z_I, z_r.repeat_interleave(V, 0), z_I_goal, z_r_goal, eps)
                L = L + t.goal_fit_weight * l_goal
                logs.update(loss=float(L.detach()), L_goal=float(l_goal.detach()))
            return L, logs

    # ------------------------------------------------------------------ diagnostics
    def _encode(self, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        return torch.cat([self.psi(x[i:i + chunk]).float() for i in range(0, len(x), chunk)])

    def diagnostics(self, held: dict) -> dict:
        """Held-out: mean ‖ψ(I) − φ(r)‖ (clean, perturbed, near the goal), the correlation of
        latent distances with d_SE(3) (images and poses), φ's distance error to the goal."""
        r = held["r"]
        z_r = self.phi(r).float()
        z_c = self._encode(held["clean"])
        z_p = self._encode(held["perturbed"])
        fit_c = (z_c - z_r).norm(dim=1)
        fit_p = (z_p - z_r).norm(dim=1)
        d = se3_pair_distance(r, r, self.ctx.w_t, self.ctx.w_r).float()
        iu = torch.triu_indices(len(r), len(r), 1, device=r.device)
        dd = d[iu[0], iu[1]]

        def corr(z):
            dz = pairwise_latent_distance(z, z)[iu[0], iu[1]]
            return float(torch.corrcoef(torch.stack([dd, dz]))[0, 1])

        near = torch.as_tensor(held["heldout"].near_goal, device=r.device) if "heldout" in held else None
        z0 = self.phi(torch.zeros(1, 6, device=r.device)).float()
        d0 = se3_pair_distance(torch.zeros(1, 6, device=r.device, dtype=r.dtype), r, self.ctx.w_t, self.ctx.w_r)[0].float()
        # the controller's view near the goal: ‖(ψ(I) − ψ(I*)) − (φ(r) − φ(0))‖ / ‖φ(r) − φ(0)‖
        zg = self._encode(self.goal_image.to(held["clean"].dtype))
        dz = (z_r - z0).norm(dim=1).clamp_min(1e-9)
        rel = ((z_c - zg) - (z_r - z0)).norm(dim=1) / dz
        out_goal = {"goal_rel_err_near": float(rel[near].median()) if near is not None and near.any() else float("nan"),
                    "goal_rel_err": float(rel.median())}
        out = {"score": float(fit_c.mean()),
               "fit_clean": float(fit_c.mean()), "fit_perturbed": float(fit_p.mean()),
               "fit_near_goal": float(fit_c[near].mean()) if near is not None and near.any() else float("nan"),
               "corr_image": corr(z_c), "corr_pose": corr(z_r),
               "phi_goal_abs_err": float(((z_r - z0).norm(dim=1) - d0).abs().mean()),
               "phi_pair_abs_err": float((pairwise_latent_distance(z_r, z_r)[iu[0], iu[1]] - dd).abs().mean()),
               **out_goal}
        if "sensor" in held:   # the same poses seen through a 224 px camera and the encoder's resize
            out["fit_sensor"] = float((self._encode(held["sensor"]) - z_r).norm(dim=1).mean())
        return out

    def latent_norm(self, held: dict) -> dict:
        """meta.json's latent_norm: ‖z‖ over ψ of the held-out images (clean and perturbed) and
        φ of their poses; the controller refuses latents beyond its bound (safety.py)."""
        from ..safety import latent_norm_record
        for m in (self.psi, self.phi):
            m.eval()
        with torch.no_grad():
            zs = [self._encode(held["clean"]), self._encode(held["perturbed"]), self.phi(held["r"]).float()]
        for m in (self.psi, self.phi):
            m.train()
        return latent_norm_record(*(z.cpu().numpy() for z in zs),
                                  source=f"ψ of {len(held['r'])} held-out images (clean and perturbed) and φ of their poses")

    # ------------------------------------------------------------------ export
    def export(self, out_dir: str, meta: dict) -> None:
        from .export import export_model
        cfg = self.cfg
        meta = dict(meta)
        meta["psi"] = {"arch": "resnet-weightnorm-groupconv", "depth": cfg.psi.depth, "width": cfg.psi.width,
                       "in_size": cfg.image_size, "parameters": count_parameters(self.psi)}
        meta["phi"] = {"arch": "mlp", "hidden": list(cfg.phi.hidden), "activation": cfg.phi.activation,
                       "input_scale": self.phi.input_scale.tolist(), "input": "r = pose_difference(goal, oT_c) = (t, θu)"}
        export_model(out_dir, self.psi, self.phi, meta)
