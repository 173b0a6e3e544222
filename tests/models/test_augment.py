"""Training augmentation (``fencebox.models.augment``): the chain as a layer, random shifts."""

from __future__ import annotations

import torch

from fencebox import load_chain
from fencebox.models.augment import ChainLayer, random_shift


def test_chain_layer_exact_forward_bpda_backward() -> None:
    chain = load_chain("bit_depth(bits=2)")
    layer = ChainLayer(chain, seed=0)
    x = torch.rand(3, 1, 6, 6, requires_grad=True)
    out = layer(x)
    u8 = (x.detach() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    exact = torch.from_numpy(chain.run(u8, 0)).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(out.detach(), exact)
    out.sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, torch.ones_like(x))  # bit_depth's surrogate is BPDA


def test_random_shift_moves_content() -> None:
    x = torch.zeros(4, 1, 5, 5)
    x[:, :, 2, 2] = 1
    out = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(4))
    assert random_shift(x, 0, torch.Generator()) is x
