"""The seed architecture, and the matmul-only form against nn.Conv2d/ConvTranspose2d (oracle)."""

import pytest
import torch
import torch.nn.functional as F

from aesearch.model.network import AutoEncoder, ModelConfig, from_patch_layout, parameter_shapes, to_patch_layout


def test_parameters_have_the_seed_shapes_and_count():
    model = AutoEncoder()
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    assert shapes == parameter_shapes(ModelConfig())
    assert shapes["encoder.5.weight"] == (314, 3136)
    # About 2.0 M, as the seed says: 1,989,498.
    assert sum(p.numel() for p in model.parameters()) == 128 + 8192 + 3136 * 314 + 314 + 314 * 3136 + 3136 + 8192 + 128
    assert model.encoder[0].bias is None and model.decoder[3].bias is None  # bias=False convolutions


def test_layers_follow_the_seed_table():
    model = AutoEncoder()
    conv1, conv2 = model.encoder[0], model.encoder[2]
    assert (conv1.kernel_size, conv1.stride, conv2.kernel_size, conv2.stride) == ((2, 2), (2, 2), (2, 2), (2, 2))
    assert isinstance(model.encoder[-1], torch.nn.LeakyReLU) and model.encoder[-1].negative_slope == 0.01
    assert isinstance(model.decoder[-1], torch.nn.Sigmoid)


@pytest.mark.parametrize("z_size", [314, 16])
def test_encode_decode_shapes_and_ranges(z_size):
    torch.manual_seed(0)
    model = AutoEncoder(ModelConfig(z_size=z_size))
    x = torch.rand(5, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (5, z_size)
    out = model.decode(z)
    assert out.shape == (5, 1, 28, 28)
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(model(x), out)


def test_patch_layout_round_trips_and_places_pixels():
    x = torch.arange(2 * 784, dtype=torch.float32).reshape(2, 1, 28, 28)
    patches = to_patch_layout(x)
    assert patches.shape == (2, 7, 7, 2, 2, 2, 2)
    assert torch.equal(from_patch_layout(patches), x)
    k, j, r, s, p, q = 3, 5, 1, 0, 1, 1
    assert patches[1, k, j, r, s, p, q] == x[1, 0, 4 * k + 2 * r + p, 4 * j + 2 * s + q]


def test_fast_form_equals_plain_layers_outputs_and_gradients():
    """Oracle: the matmul-only form computes what nn.Conv2d/ConvTranspose2d compute, in float64."""
    torch.manual_seed(0)
    plain = AutoEncoder().double()
    fast = AutoEncoder().double()
    fast.load_state_dict(plain.state_dict())
    x = torch.rand(7, 1, 28, 28, dtype=torch.float64)

    z_plain, z_fast = plain.encode(x), fast.encode_patches(to_patch_layout(x))
    torch.testing.assert_close(z_fast, z_plain, rtol=1e-12, atol=1e-12)
    out_plain = plain(x)
    out_fast = fast.forward_patches(to_patch_layout(x))
    torch.testing.assert_close(from_patch_layout(out_fast), out_plain, rtol=1e-12, atol=1e-12)

    F.mse_loss(out_plain, x).backward()
    F.mse_loss(out_fast, to_patch_layout(x)).backward()  # MSE does not care about pixel order
    for (name, p_plain), (_, p_fast) in zip(plain.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_weights_round_trip():
    torch.manual_seed(1)
    model = AutoEncoder(ModelConfig(z_size=20))
    again = AutoEncoder.from_weights(model.weights(), model.config)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(again.encode(x), model.encode(x))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_config_rejects_bad_z_size(bad):
    with pytest.raises(ValueError, match="z_size"):
        ModelConfig(z_size=bad)
