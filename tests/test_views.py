"""The retrieval recipes' view-consistency term: views, the loss, and what training does with them."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aesearch import defaults
from aesearch.sources.fashion_mnist import FashionMNIST, Split
from aesearch.training.train import RECIPES, TrainConfig, fit
from aesearch.training.views import ViewAugmentation, _base_grid, augment, nt_xent
from tests.conftest import synthetic_images, synthetic_labels

STILL = ViewAugmentation(rotation_degrees=0, zoom=0, shift=0, flip=0, ink=0, erase=0)


def images(n=64, size=28):
    return torch.from_numpy(synthetic_images(n)).float().div(255).unsqueeze(1)[..., :size, :size]


def test_the_grid_is_affine_grids():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1))
    for height, width in ((28, 28), (12, 20)):
        ours = (_base_grid(height, width, torch.device("cpu")) @ theta.transpose(1, 2)).view(5, height, width, 2)
        torch.testing.assert_close(ours, F.affine_grid(theta, [5, 1, height, width], align_corners=False))


def test_an_identity_view_is_the_image():
    x = images()
    torch.testing.assert_close(augment(x, STILL, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)


def test_a_mirrored_view_is_the_flipped_image():
    x = images()
    view = augment(x, ViewAugmentation(rotation_degrees=0, zoom=0, shift=0, flip=1, ink=0, erase=0), torch.Generator())
    torch.testing.assert_close(view, x.flip(-1), atol=1e-5, rtol=0)


def test_erasing_blanks_one_rectangle_in_the_chosen_share():
    x = torch.ones(2000, 1, 28, 28)
    erase_only = ViewAugmentation(rotation_degrees=0, zoom=0, shift=0, flip=0, ink=0, erase=0.3)
    view = augment(x, erase_only, torch.Generator())
    blanked = view[:, 0] == 0
    touched = blanked.flatten(1).any(1)
    assert 0.25 < touched.float().mean() < 0.35
    for mask in blanked[touched][:50]:  # each is one solid rectangle of 4 to 11 pixels a side
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask.sum() == len(rows) * len(cols) and 4 <= len(rows) <= 11 and 4 <= len(cols) <= 11


def test_views_are_seeded_and_in_range():
    x = images()
    a, b = (augment(x, ViewAugmentation(), torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)


def test_nt_xent_against_a_loop():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    x = F.normalize(torch.cat([a, b]), dim=1)
    losses = []
    for i in range(12):
        positive = (i + 6) % 12
        logits = torch.tensor([float(x[i] @ x[j] / 0.5) for j in range(12) if j != i])
        target = positive if positive < i else positive - 1
        losses.append(-torch.log_softmax(logits, 0)[target])
    assert nt_xent(a, b, 0.5).item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


def test_the_recipes_the_cli_offers_exist():
    assert set(defaults.RECIPE_NAMES) == set(RECIPES) and defaults.RECIPE in RECIPES
    assert TrainConfig.for_recipe("default") == RECIPES["reconstruction"]  # the old name still works


@pytest.fixture(scope="module")
def tiny_data():
    x = torch.from_numpy(synthetic_images(600))
    y = torch.from_numpy(synthetic_labels(600)).long()
    return FashionMNIST(Split("train", x[:512], y[:512]), Split("test", x[512:], y[512:]), Path("."))


def test_retrieval_training_runs_both_phases_and_keeps_the_encoder_in_the_decoder_phase(tiny_data):
    config = TrainConfig.for_recipe(
        "retrieval", epochs=2, decoder_epochs=2, batch_size=64, z_size=32, consistency_dims=16, precision="fp32"
    )
    result = fit(config, tiny_data, progress=False, log=None)
    assert [h.phase for h in result.history] == ["joint", "joint", "decoder", "decoder"]
    assert all(h.consistency_loss > 0 for h in result.history[:2])
    assert all(h.consistency_loss is None for h in result.history[2:])
    assert result.history[-1].loss < result.history[0].loss
    assert all(p.requires_grad for p in result.model.parameters())  # unfrozen for whoever trains it next

    # The decoder phase leaves the encoder exactly as the joint phase left it.
    joint_only = fit(config.__class__(**{**config.to_dict(), "decoder_epochs": 0}), tiny_data, progress=False, log=None)
    for name, weight in result.model.encoder.state_dict().items():
        assert torch.equal(weight, joint_only.model.encoder.state_dict()[name]), name


def test_consistency_settings_are_checked():
    from aesearch.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="consistency dims"):
        TrainConfig.for_recipe("retrieval", z_size=32, consistency_dims=64)
    with pytest.raises(InvalidArgumentError, match="temperature"):
        TrainConfig.for_recipe("retrieval", temperature=0)


def test_photo_views_pad_with_the_background_and_turn_hue_without_changing_lightness():
    from dataclasses import replace

    from aesearch.training.views import PHOTO_VIEWS

    generator = torch.Generator().manual_seed(0)
    white = torch.ones(8, 3, 32, 32)
    moved = augment(white, replace(PHOTO_VIEWS, brightness=0, contrast=0, erase=0), generator)
    torch.testing.assert_close(moved, white)  # turned, zoomed and shifted: still white, no black frame
    colours = torch.rand(8, 3, 1, 1, generator=generator).expand(8, 3, 16, 16) * 0.5 + 0.25  # inside [0, 1] after
    turned = augment(colours, replace(STILL, hue=1.0), generator)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((turned * luma).sum(1), (colours * luma).sum(1), atol=1e-5, rtol=0)
    assert (turned - colours).abs().amax() > 0.05  # the hue did move
    kept = augment(colours, replace(STILL, hue=0.0), generator)
    torch.testing.assert_close(kept, colours)


def test_a_photo_model_trains_with_photo_views_and_a_hue_choice():
    from aesearch.model.architecture import ModelConfig

    member = ModelConfig(image_size=16, channels=3, widths=(8, 16), kernel=4, z_size=12, framing="photo")
    x = torch.randint(0, 256, (96, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(96, dtype=torch.long)
    data = FashionMNIST(Split("train", x[:80], y[:80]), Split("test", x[80:], y[80:]), Path("."))
    config = TrainConfig.for_recipe("retrieval", epochs=2, decoder_epochs=1, batch_size=16, z_size=12, hue=1.0)
    result = fit(config, data, model_config=member, progress=False, log=None)
    assert result.model.config == member and len(result.history) == 3 and result.history[0].consistency_loss > 0
