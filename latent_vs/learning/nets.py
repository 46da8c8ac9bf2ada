"""The two encoders of the latent space Z = R^D (paper III-B, III-C).

- φ (`PoseNet`): pose r = (t, θu) (B, 6) -> z_r (B, D). An MLP 6→32→64→128→64→32 with ReLU
  after each hidden layer (paper III-C). The input is scaled by a fixed buffer inside the
  module (metres and radians have different ranges), so an exported φ is self-contained.
- ψ (`ImageEncoder`): image (B, 1, S, S), normalised as `normalise_images` does -> z_I (B, D).
  A ResNet of BasicBlocks (depth 10/18/34) with weight normalisation instead of batch
  normalisation and a group-convolution head instead of average pooling (paper III-C, after
  AEVS [11]): a depthwise convolution whose kernel covers the whole final feature map, then
  a linear layer to D. Written here because torchvision does not import beside torch 2.13.

Without batch norm, initialisation matters: He initialisation everywhere, and each residual
branch's last convolution scaled by 1/sqrt(blocks) (Fixup-like), so that the signal keeps its
scale and every layer learns from the first step.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torch.nn.utils import parametrize

# ψ's input normalisation is part of the model-directory contract: x = (I / 255 - IMAGE_MEAN) / IMAGE_STD
from ..models import IMAGE_MEAN, IMAGE_STD, normalise_images  # noqa: F401

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh, "softplus": nn.Softplus,
               "gelu": nn.GELU}

class PoseNet(nn.Module):
    """φ: (B, 6) float32 poses r = (t [m], θu [rad]) -> (B, latent_dim)."""

    def __init__(self, hidden=(32, 64, 128, 64), latent_dim: int = 32, activation: str = "relu",
                 input_scale=(1 / 0.3, 1 / 0.3, 1 / 0.3, 1.0, 1.0, 1.0)):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")
        self.hidden = tuple(int(h) for h in hidden)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.register_buffer("input_scale", torch.as_tensor(input_scale, dtype=torch.float32).reshape(6))
        layers: list[nn.Module] = []
        dims = (6,) + self.hidden
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(dims[-1], self.latent_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.mlp(r * self.input_scale)


def _wn_conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, nonlinearity: str = "relu",
             scale: float = 1.0, padding: int | None = None) -> nn.Module:
    """A weight-normalised convolution with He initialisation (so that, without batch norm,
    activations keep their scale through the network), its gain optionally scaled."""
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding, groups=groups,
                     bias=True)
    with torch.no_grad():
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity=nonlinearity)
        conv.weight.mul_(scale)
        conv.bias.zero_()
    return weight_norm(conv)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions) with weight norm instead of batch norm.

    residual_scale shrinks the branch's initial gain (Fixup-like: 1/sqrt(number of blocks)),
    so a deep stack starts close to the identity but every weight gets gradients at once."""

    def __init__(self, cin: int, cout: int, stride: int = 1, residual_scale: float = 1.0):
        super().__init__()
        self.conv1 = _wn_conv(cin, cout, 3, stride)
        self.conv2 = _wn_conv(cout, cout, 3, nonlinearity="linear", scale=residual_scale)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else _wn_conv(cin, cout, 1, stride, nonlinearity="linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.conv2(self.act(self.conv1(x))))


DEPTHS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class ImageEncoder(nn.Module):
    """ψ: (B, 1, S, S) normalised images -> (B, latent_dim).

    depth: 10, 18 or 34 (BasicBlock counts per stage 1111 / 2222 / 3463); width: channels of
    the first stage (64 in ResNet; stages use width, 2w, 4w, 8w); in_size: S (the head's
    kernel covers the final S/32 x S/32 feature map, so S is fixed at construction)."""

    def __init__(self, depth: int = 18, width: int = 64, in_size: int = 224, latent_dim: int = 32,
                 in_channels: int = 1):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth {depth} not supported (choose from {sorted(DEPTHS)})")
        if in_size < 32 or in_size % 32:
            raise ValueError(f"input size {in_size} must be a multiple of 32 (>= 32)")
        self.depth, self.width, self.in_size, self.latent_dim = int(depth), int(width), int(in_size), int(latent_dim)
        self.stem = nn.Sequential(_wn_conv(in_channels, width, 7, stride=2),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        blocks: list[nn.Module] = []
        cin = width
        res_scale = 1.0 / math.sqrt(sum(DEPTHS[depth]))
        for stage, n in enumerate(DEPTHS[depth]):
            cout = width * 2 ** stage
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride=2 if (i == 0 and stage > 0) else 1, residual_scale=res_scale))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        final = in_size // 32
        # group-convolution head (paper III-C): one kernel per channel over the whole final map
        self.head = _wn_conv(cin, cin, final, groups=cin, padding=0)
        self.fc = nn.Linear(cin, self.latent_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The ResNet trunk: (B, 1, S, S) -> (B, 8·width, S/32, S/32)."""
        return self.blocks(self.stem(x))

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        """The group-convolution head and the linear layer: features -> (B, latent_dim)."""
        return self.fc(torch.relu(self.head(f)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))


def strip_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-norm parametrisation into a plain weight, in place (for export: faster
    and TorchScript-friendly). Returns the module."""
    for m in module.modules():
        if parametrize.is_parametrized(m):
            # a deep copy shares the dynamically made parametrised class with its original;
            # give this module its own so that removing the property leaves the original intact
            cls = type(m)
            m.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


def load_weights(module: nn.Module, state: dict, where: str) -> None:
    """Load `state` into `module`, whether its weights are weight-normed (a training
    checkpoint) or folded (an exported TorchScript file): a folded weight w becomes
    g = ‖w‖ (per output channel), v = w. Raises ValueError naming `where` on a mismatch."""
    state = dict(state)
    for name, m in module.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            key = f"{name}.weight" if name else "weight"
            if key in state:
                w = state.pop(key)
                g = w.flatten(1).norm(dim=1).reshape(-1, *([1] * (w.dim() - 1)))
                state[f"{key[:-len('weight')]}parametrizations.weight.original0"] = g
                state[f"{key[:-len('weight')]}parametrizations.weight.original1"] = w
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{where}: does not match the configured network ({str(e).splitlines()[0]})") from None


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
