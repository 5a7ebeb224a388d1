"""Training: the loss falls, recipes are what they claim, runs are reproducible and saved whole."""

import itertools
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from aesearch.errors import InvalidArgumentError
from aesearch.interfaces.cli import cli
from aesearch.model.checkpoint import load_checkpoint
from aesearch.model.network import AutoEncoder, ModelConfig
from aesearch.sources.fashion_mnist import FashionMNIST, Split
from aesearch.training.train import RECIPES, TrainConfig, curve_path, fit, reconstruction_mse
from tests.conftest import synthetic_images, synthetic_labels


@pytest.fixture(scope="module")
def tiny_data():
    images = torch.from_numpy(synthetic_images(600))
    labels = torch.from_numpy(synthetic_labels(600)).long()
    return FashionMNIST(
        Split("train", images[:512], labels[:512]), Split("test", images[512:], labels[512:]), Path(".")
    )


def quick(recipe="default", **overrides):
    return TrainConfig.for_recipe(recipe, **{"epochs": 3, "batch_size": 64, "z_size": 32, **overrides})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_few_epochs_lower_the_loss(tiny_data, precision):
    untrained = reconstruction_mse(AutoEncoder(ModelConfig(z_size=32)), tiny_data.test)
    result = fit(quick(precision=precision, epochs=4), tiny_data, progress=False, log=None)
    losses = [h.loss for h in result.history]
    assert losses[-1] < losses[0] * 0.7
    assert result.test_mse < untrained * 0.7
    assert result.precision == precision


def test_runs_are_reproducible(tiny_data):
    a = fit(quick(epochs=1, precision="fp32"), tiny_data, progress=False, log=None)
    b = fit(quick(epochs=1, precision="fp32"), tiny_data, progress=False, log=None)
    for (name, wa), wb in zip(a.model.weights().items(), b.model.weights().values(), strict=True):
        assert (wa == wb).all(), name


def test_seed_recipe_is_the_articles():
    seed = RECIPES["seed"]
    assert (seed.epochs, seed.batch_size, seed.lr, seed.schedule, seed.weight_decay) == (15, 1024, 1e-3, "plateau", 0)


def test_seed_schedule_steps_on_the_last_batch_loss(tiny_data):
    result = fit(quick("seed", epochs=6, lr=1e-3), tiny_data, progress=False, log=None)
    lrs = [h.lr for h in result.history]
    # ReduceLROnPlateau(threshold=0.1, patience=1) only ever divides the lr by 10.
    assert all(b in (a, pytest.approx(a / 10)) for a, b in itertools.pairwise(lrs))


def test_drop_last_and_batch_larger_than_data(tiny_data):
    result = fit(quick(epochs=1, batch_size=500), tiny_data, progress=False, log=None)
    assert result.history[0].images_per_second > 0
    with pytest.raises(InvalidArgumentError, match="larger than the 512 training images"):
        fit(quick(epochs=1, batch_size=513), tiny_data, progress=False, log=None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch size"),
        ({"lr": 0.0}, "learning rate"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_bad_settings(overrides, message):
    with pytest.raises(InvalidArgumentError, match=message):
        TrainConfig.for_recipe("default", **overrides)
    with pytest.raises(InvalidArgumentError, match="unknown recipe"):
        TrainConfig.for_recipe("fancy")


def test_cli_train_writes_checkpoint_and_curve(fake_data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # models/ is made inside the current folder (elsewhere it is refused)
    out = tmp_path / "models" / "tiny.safetensors"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data-dir",
            str(fake_data_dir),
            "--limit",
            "256",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--z-size",
            "16",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Epoch: 2" in result.output and "Test MSE" in result.output
    ckpt = load_checkpoint(out)
    assert ckpt.model_config.z_size == 16
    info = ckpt.info
    # The default recipe: 2 epochs with the view-consistency term (on 6 of the 16 components), 5 of the decoder
    assert info["recipe"] == "retrieval" and info["epochs_run"] == 7
    assert [h["phase"] for h in info["history"]] == ["joint"] * 2 + ["decoder"] * 5
    assert info["train_config"]["consistency_dims"] == 6
    assert {"loss", "lr", "seconds"} <= set(info["history"][0])
    assert 0 < info["test_mse"] < 1 and len(info["data_fingerprint"]) == 64
    assert info["train_config"]["batch_size"] == 64
    assert curve_path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "Invalid value for '--epochs'"),
        (["--batch-size", "-5"], "Invalid value for '--batch-size'"),
        (["--recipe", "fancy"], "Invalid value for '--recipe'"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
        (
            ["--batch-size", "128"],
            "--batch-size 128 is larger than the 64 training images: lower --batch-size or raise --limit",
        ),  # the library's parameters, as the options that set them
        (["--out", "."], "is a directory"),
    ],
)
def test_cli_train_bad_options(fake_data_dir, args, message):
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(fake_data_dir), "--limit", "64", *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_train_without_data_says_how_to_get_it(no_real_data):
    result = CliRunner().invoke(cli, ["train", "--epochs", "1"])
    assert result.exit_code == 1
    assert "apt-get install dataset-fashion-mnist" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_corruption_shifts_masks_and_adds_noise():
    from aesearch.model.network import AutoEncoder, from_patch_layout, to_patch_layout
    from aesearch.training.train import _corrupt

    seed_shape = AutoEncoder(ModelConfig(z_size=8))
    x = to_patch_layout(torch.from_numpy(synthetic_images(8)).float().div(255))
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(12):  # one shift per batch, within 2 pixels; never the zero roll's copy alone
        shifted = from_patch_layout(_corrupt(seed_shape, x, quick(shift=2), generator))
        rolls = {
            (dy, dx): torch.roll(from_patch_layout(x), (dy, dx), dims=(2, 3))
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        }
        matches = [shift for shift, rolled in rolls.items() if torch.equal(shifted, rolled)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 2 and seen != {(0, 0)}  # the batches really are moved, by different amounts
    masked = _corrupt(seed_shape, torch.ones(64, 7, 7, 2, 2, 2, 2), quick(mask=0.25), generator)
    assert 0.2 < (masked == 0).float().mean() < 0.3
    noisy = _corrupt(seed_shape, torch.zeros(64, 7, 7, 2, 2, 2, 2), quick(noise=0.1), generator)
    assert abs(noisy.mean()) < 0.01 and 0.09 < noisy.std() < 0.11  # zero-mean, unclipped
    assert _corrupt(seed_shape, x, quick(), generator) is x


def test_corruption_stops_after_corrupt_until(tiny_data):
    """corrupt_until=0 never corrupts: the run equals a plain one, weight for weight."""
    plain = fit(quick(epochs=1, precision="fp32"), tiny_data, progress=False, log=None)
    never = fit(quick(epochs=1, precision="fp32", shift=2, corrupt_until=0.0), tiny_data, progress=False, log=None)
    for name, w in plain.model.weights().items():
        assert (never.model.weights()[name] == w).all(), name


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_after", [1, 3])  # in the joint epochs, and in the decoder-only ones
def test_an_interrupted_training_resumes_to_the_weights_of_an_uninterrupted_one(tiny_data, tmp_path, stop_after):
    config = quick("retrieval", epochs=2, decoder_epochs=2, precision="fp32")
    whole = fit(config, tiny_data, progress=False, log=None)
    state = tmp_path / "run.training.pt"

    def interrupt(line: str) -> None:
        if line.startswith(f"Epoch: {stop_after}"):
            raise _Interrupt  # as Ctrl-C would, right after the epoch's state was saved

    with pytest.raises(_Interrupt):
        fit(config, tiny_data, resume=state, progress=False, log=interrupt)
    assert state.exists()
    lines = []
    resumed = fit(config, tiny_data, resume=state, progress=False, log=lines.append)
    assert lines[0].startswith(f"Resuming the interrupted training after epoch {stop_after} of 4")
    assert not state.exists()  # done: nothing left to resume
    assert [h.epoch for h in resumed.history] == [1, 2, 3, 4]
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    assert resumed.test_mse == whole.test_mse


def test_a_saved_state_of_another_run_is_not_resumed(tiny_data, tmp_path):
    state = tmp_path / "run.training.pt"
    with pytest.raises(_Interrupt):
        fit(quick(epochs=2), tiny_data, resume=state, progress=False, log=_raise_after_first_epoch)
    lines = []
    result = fit(quick(epochs=2, lr=1e-3), tiny_data, resume=state, progress=False, log=lines.append)
    assert "holds the state of another training run" in lines[0] and len(result.history) == 2
    state.write_bytes(b"damaged")
    lines = []
    fit(quick(epochs=1), tiny_data, resume=state, progress=False, log=lines.append)
    assert "or a damaged one: training from the start" in lines[0] and not state.exists()


def _raise_after_first_epoch(line: str) -> None:
    if line.startswith("Epoch: 1"):
        raise _Interrupt


def test_the_time_left_follows_the_last_epochs_not_a_slow_start():
    from aesearch.training.train import EpochStats, time_left

    def epochs(*seconds):
        return [EpochStats(n, 0.1, 0.1, 1e-3, s, 1.0) for n, s in enumerate(seconds, start=1)]

    assert time_left(epochs(60.0, 1.0, 1.0, 1.0, 1.0, 1.0), 10) == 4.0  # 4 epochs at the last five's pace
    assert time_left(epochs(2.0, 4.0), 10) == 24.0  # fewer than five so far: all of them
    assert time_left([], 10) == 0.0


def test_ctrl_c_in_training_says_what_was_saved_and_how_to_go_on(tiny_data, tmp_path):
    lines = []

    def ctrl_c_after_epoch_2(line: str) -> None:
        lines.append(line)
        if line.startswith("Epoch: 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(quick(epochs=4), tiny_data, resume=tmp_path / "run.training.pt", progress=False, log=ctrl_c_after_epoch_2)
    assert lines[-1] == "Interrupted in epoch 3: saved after epoch 2 of 4; run the same again"
