"""Latent codec, evaluator and their training checkpoints."""


import numpy
import pytest
import torch

from zerase_core.nano.codec import DEFAULT_CODEC_PATH, CodecConfig, LatentCodec
from zerase_core.nano.evaluator import CLASSES, DEFAULT_EVALUATOR_PATH, Evaluator
from zerase_core.nano.render import NONE, random_scene, render_batch
from zerase_core.nano.training import LoopSettings, load_checkpoint, run_loop, seed_torch, start_training
from zerase_core.nano.training.codec import codec_loss


@pytest.mark.parametrize("size", [64, 96])
def test_codec_latent_geometry_matches_z_image(size):
    codec = LatentCodec().eval()
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        latents = codec.encode(images)
        decoded = codec.decode(latents)
    assert latents.shape == (2, 16, size // 8, size // 8)
    assert decoded.shape == images.shape and 0.0 <= decoded.min() and decoded.max() <= 1.0


def test_codec_rejects_sizes_that_are_not_multiples_of_8():
    with pytest.raises(ValueError, match="multiple of 8"):
        LatentCodec().encode(torch.rand(1, 3, 60, 64))


@pytest.mark.parametrize("model_class", [LatentCodec, Evaluator])
def test_save_load_round_trip_is_bit_exact(tmp_path, model_class):
    torch.manual_seed(0)
    model = model_class()
    if model_class is LatentCodec:
        model.shift.fill_(0.25)
        model.scale.fill_(0.5)
    path = tmp_path / "weights.safetensors"
    model.save(path)
    loaded = model_class.load(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert not list(tmp_path.glob(".*.tmp"))


def test_loading_the_wrong_kind_of_weights_says_so(tmp_path):
    path = tmp_path / "codec.safetensors"
    LatentCodec().save(path)
    with pytest.raises(ValueError, match="nano-evaluator"):
        Evaluator.load(path)


def test_evaluator_outputs_and_prediction_names():
    evaluator = Evaluator().eval()
    images = render_batch([random_scene(numpy.random.default_rng(0)) for _ in range(3)], 64)
    with torch.no_grad():
        logits = evaluator.logits(images)
        features = evaluator.features(images)
    assert {name: scores.shape for name, scores in logits.items()} == {
        name: (3, len(classes)) for name, classes in CLASSES.items()
    }
    assert features.shape == (3, evaluator.config.feature_dim)
    assert CLASSES["shape"] == ("circle", "square", "triangle", "star", "cross", "diamond", NONE)
    predictions = evaluator.predict(images)
    for name, names in predictions.items():
        assert len(names) == 3 and set(names) <= set(CLASSES[name])


def _tiny_codec_run(folder, steps, seconds=60.0, resume=False):
    seed_torch(0)
    codec = LatentCodec(CodecConfig(widths=(8, 8, 16, 16)))
    optimizer, state = start_training(folder, codec, seed=0, resume=resume, lr=1e-3)

    def loss_of_batch(current):
        images = render_batch([random_scene(current.numpy_rng) for _ in range(2)], 64)
        return codec_loss(codec, images, current.torch_rng)

    run_loop(LoopSettings(total_steps=steps, seconds=seconds, base_lr=1e-3, warmup=1), folder, codec, optimizer, state, loss_of_batch)
    return codec


def test_resumed_training_matches_an_uninterrupted_run(tmp_path, capsys):
    straight = _tiny_codec_run(tmp_path / "straight", steps=3)
    _tiny_codec_run(tmp_path / "chunked", steps=2)
    resumed = _tiny_codec_run(tmp_path / "chunked", steps=3, resume=True)
    for name, tensor in straight.state_dict().items():
        assert torch.allclose(tensor, resumed.state_dict()[name], atol=1e-6), name


def test_resume_without_checkpoint_explains_the_fix(tmp_path):
    codec = LatentCodec()
    with pytest.raises(FileNotFoundError, match="without --resume"):
        load_checkpoint(tmp_path, codec, torch.optim.AdamW(codec.parameters()))


@pytest.mark.skipif(not DEFAULT_EVALUATOR_PATH.exists(), reason="shipped evaluator weights not trained yet")
def test_shipped_evaluator_is_accurate_on_held_out_renders():
    rng = numpy.random.default_rng(424242)
    scenes = [random_scene(rng) for _ in range(256)]
    evaluator = Evaluator.load()
    predictions = evaluator.predict(render_batch(scenes, 64))
    for attribute, predicted in predictions.items():
        accuracy = numpy.mean([value == getattr(scene, attribute) for value, scene in zip(predicted, scenes)])
        assert accuracy >= 0.98, (attribute, accuracy)


@pytest.mark.skipif(not DEFAULT_CODEC_PATH.exists(), reason="shipped codec weights not trained yet")
def test_shipped_codec_reconstructs_renders_and_has_unit_scale_latents():
    rng = numpy.random.default_rng(434343)
    images = render_batch([random_scene(rng) for _ in range(64)], 64)
    codec = LatentCodec.load()
    with torch.no_grad():
        latents = codec.encode(images)
        error = (codec.decode(latents) - images).pow(2).mean().item()
    assert 10 * numpy.log10(1 / error) >= 28.0
    assert 0.7 <= latents.std().item() <= 1.4 and abs(latents.mean().item()) <= 0.3


def test_dit_dataset_is_cached_in_a_new_run_folder(tmp_path):
    from zerase_core.nano.training.dit import build_dataset

    folder = tmp_path / "runs" / "new-fine-tune"  # not created yet, as with --init-from and a new --out
    data = build_dataset(folder, size=20, seed=3)
    assert data["latents"].shape == (20, 16, 8, 8) and data["attributes"].shape == (20, 4)
    cached = build_dataset(folder, size=20, seed=3)
    assert torch.equal(cached["latents"], data["latents"])
    assert [path.name for path in folder.iterdir()] == ["dataset_20_3.safetensors"]
