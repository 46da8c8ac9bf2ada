"""ψ and φ: the architecture the paper describes (III-C), self-contained TorchScript export."""
import copy

import pytest
import torch
from torch import nn

from latent_vs.learning.nets import ImageEncoder, PoseNet, strip_weight_norm


def test_posenet_is_the_papers_mlp():
    phi = PoseNet()
    lin = [m for m in phi.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(6, 32), (32, 64), (64, 128), (128, 64), (64, 32)]
    assert sum(isinstance(m, nn.ReLU) for m in phi.modules()) == 4  # after each hidden layer only
    assert phi(torch.zeros(3, 6)).shape == (3, 32)
    assert "input_scale" in dict(phi.named_buffers())
    with pytest.raises(ValueError):
        PoseNet(activation="nope")


@pytest.mark.parametrize("depth,width,size", [(10, 8, 64), (18, 8, 96), (34, 4, 64)])
def test_image_encoder_shapes_and_no_batchnorm(depth, width, size):
    psi = ImageEncoder(depth, width, size, latent_dim=32)
    assert psi(torch.zeros(2, 1, size, size)).shape == (2, 32)
    mods = list(psi.modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d)) for m in mods)
    convs = [m for m in mods if isinstance(m, nn.Conv2d)]
    assert all(hasattr(m, "parametrizations") for m in convs)  # weight norm everywhere
    # group-convolution head: one kernel per channel covering the whole final feature map
    assert psi.head.groups == psi.head.in_channels == 8 * width
    assert psi.head.kernel_size == (size // 32, size // 32)
    n_blocks = {10: 4, 18: 8, 34: 16}[depth]
    assert sum(type(m).__name__ == "BasicBlock" for m in mods) == n_blocks


def test_bad_encoder_sizes_are_refused():
    with pytest.raises(ValueError):
        ImageEncoder(depth=50)
    with pytest.raises(ValueError):
        ImageEncoder(in_size=100)


def test_weight_norm_strip_and_torchscript_keep_outputs(tmp_path):
    torch.manual_seed(0)
    psi = ImageEncoder(10, 8, 64)
    with torch.no_grad():  # give the zero-initialised residual gains some weight
        for m in psi.modules():
            if hasattr(m, "parametrizations"):
                m.parametrizations.weight.original0.normal_(1.0, 0.2)
    x = torch.randn(3, 1, 64, 64)
    ref = psi(x).detach()
    plain = strip_weight_norm(copy.deepcopy(psi)).eval()
    ts = torch.jit.trace(plain, x)
    ts.save(str(tmp_path / "psi.pt"))
    loaded = torch.jit.load(str(tmp_path / "psi.pt"))
    torch.testing.assert_close(loaded(x), ref, rtol=1e-4, atol=1e-5)


def test_psi_fits_a_tiny_regression():
    """Gradients flow through weight norm, residual blocks and the head: ψ can fit 4 targets."""
    torch.manual_seed(0)
    psi = ImageEncoder(10, 8, 64, latent_dim=4)
    x, y = torch.randn(4, 1, 64, 64), torch.randn(4, 4)
    opt = torch.optim.Adam(psi.parameters(), 3e-3)
    first = None
    for _ in range(40):
        loss = ((psi(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
