"""`erase`, `generate`, `export-lora` and `erase-many` on real Z-Images from the command line: tiny random models
as ComfyUI single files (--dit/--text-encoder/--vae) and as a diffusers folder (--model), built in fixtures."""
from __future__ import annotations

import gc
import json

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e \".[real]\")")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from real_models import QUICK_ERASE, diffusers_folder, model_options, single_files, tokenizer_folder  # noqa: E402
from zerase_core.model.checkpoint import fingerprint  # noqa: E402
from zerase_core.cli import main  # noqa: E402
from zerase_core.formats.erasure_file import read_erasure  # noqa: E402
from zerase_core.real import run as real_run  # noqa: E402
from zerase_core.real.sources import load_transformer  # noqa: E402
from zerase_core.real.world import parts  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    if not tokenizer_folder().is_dir():
        pytest.skip(f"no Qwen tokenizer files at {tokenizer_folder()} (set COMFYUI_PATH to a ComfyUI checkout)")
    folder = tmp_path_factory.mktemp("single")
    return {"a": single_files(folder, seed=0), "b": single_files(folder, seed=1)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    if not tokenizer_folder().is_dir():
        pytest.skip(f"no Qwen tokenizer files at {tokenizer_folder()}")
    return diffusers_folder(tmp_path_factory.mktemp("diffusers") / "Z-Image-Tiny")


def _live_qwen3() -> int:
    gc.collect()
    return sum(type(thing) is transformers.Qwen3Model for thing in gc.get_objects())


@pytest.fixture
def never_together(monkeypatch):
    """Wrap (not replace) the DiT loader: when a DiT is mapped, no Qwen3 model may be alive."""
    real_load, seen = real_run.load_transformer, []

    def checked(source, *rest, **options):
        seen.append(_live_qwen3())
        return real_load(source, *rest, **options)
    monkeypatch.setattr(real_run, "load_transformer", checked)
    return seen


def test_erase_and_generate_with_single_files(files, tmp_path, capsys, never_together):
    out = tmp_path / "cat.safetensors"
    assert main(["erase", "--concept", "cat", *model_options(files["a"]), *QUICK_ERASE, "--out", str(out)]) == 0
    assert never_together == [0], "the text encoder was alive when the DiT was loaded"
    err = capsys.readouterr().err
    for phase in ("encode prompts", "x_t pool", "teacher cache", "train"):
        assert phase in err, f"no progress bar for {phase}"
    info, tensors, _ = read_erasure(out)
    assert info.base_fingerprint == fingerprint(load_transformer(files["a"]["dit"]))
    assert info.training["erase"] == ["cat", "a picture of cat", "a photo of cat", "a painting of cat"]
    assert info.training["targets"][1] == "a picture of" and info.steps_done == 2 and not info.partial
    assert info.training["config"]["shuffle_bank"] == 2 and info.training["config"]["latent_size"] == [4, 4]
    assert any(tensor.abs().sum() > 0 for tensor in tensors.values())

    source = parts(dit=files["a"]["dit"], text_encoder=files["a"]["text_encoder"], vae=files["a"]["vae"],
                   tokenizer=files["a"]["tokenizer"])
    plain = real_run.generate_real(source, ["a photo of cat"], [7], 3, 1.0, 32, 48)
    again = real_run.generate_real(source, ["a photo of cat"], [7], 3, 1.0, 32, 48)
    erased = real_run.generate_real(source, ["a photo of cat"], [7], 3, 1.0, 32, 48, [out], [4.0])
    assert plain.shape == (1, 3, 32, 48) and torch.equal(plain, again)
    assert not torch.equal(plain, erased), "the erasure changed nothing"
    for extra in ([], ["--erasure", str(out)]):
        png = tmp_path / f"grid{len(extra)}.png"
        assert main(["generate", "--prompt", "a photo of cat", "--width", "48", "--height", "32", "--steps", "2",
                     *model_options(files["a"]), *extra, "--out", str(png)]) == 0
        assert png.stat().st_size > 0
    assert "sample" in capsys.readouterr().err


def test_erasure_for_another_base_is_refused_naming_both_fingerprints(files, tmp_path, capsys):
    out = tmp_path / "dog.safetensors"
    assert main(["erase", "--concept", "dog", *model_options(files["a"]), *QUICK_ERASE, "--out", str(out)]) == 0
    theirs, ours = read_erasure(out)[0].base_fingerprint, fingerprint(load_transformer(files["b"]["dit"]))
    assert theirs != ours
    capsys.readouterr()
    assert main(["generate", "--prompt", "a dog", "--size", "32", "--steps", "1", *model_options(files["b"]),
                 "--erasure", str(out), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert theirs in err and ours in err and "allow" in err
    assert main(["export-lora", str(out), *model_options(files["b"])]) == 2
    err = capsys.readouterr().err
    assert theirs in err and ours in err
    assert main(["generate", "--prompt", "a dog", "--size", "32", "--steps", "1", *model_options(files["b"]),
                 "--erasure", str(out), "--allow-other-base", "--out", str(tmp_path / "x.png")]) == 0


def test_diffusers_folder_erase_generate_base_preset_and_erase_many(folder, tmp_path, capsys, never_together):
    out = tmp_path / "star.safetensors"
    assert main(["erase", "--concept", "star", "--prompt", "a red star", "--anchor", "a red circle", "--model",
                 str(folder), *QUICK_ERASE, "--out", str(out)]) == 0
    info = read_erasure(out)[0]
    assert info.training["erase"] == ["a red star"] and info.training["targets"] == ["a red circle"]
    assert info.base_fingerprint == fingerprint(load_transformer(folder))
    for preset in (["--preset", "turbo"], ["--preset", "base", "--steps", "3"]):   # base: cfg 5 (two calls a step)
        png = tmp_path / f"{preset[1]}.png"
        assert main(["generate", "--prompt", "a red star", "--size", "32", "--model", str(folder), "--erasure",
                     str(out), *preset, "--out", str(png)]) == 0
        assert "cfg 5" in capsys.readouterr().out if preset[1] == "base" else True
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("cat\ndog | anchor=a photo of a puppy\n")
    assert main(["erase-many", str(concepts), "--out-dir", str(tmp_path / "many"), "--model", str(folder),
                 *QUICK_ERASE]) == 0
    summary = json.loads((tmp_path / "many" / "summary.json").read_text())
    assert [record["status"] for record in summary["entries"]] == ["done", "done"]
    dog = read_erasure(tmp_path / "many" / "dog.safetensors")[0]
    assert dog.training["anchors"] == ["a photo of a puppy"]
    assert never_together == [0] * 5          # erase, two generates, two erase-many entries


def test_model_options_fail_clearly(files, tmp_path, capsys):
    assert main(["generate", "--prompt", "x", "--vae", str(files["a"]["vae"]), "--out", str(tmp_path / "x.png")]) == 2
    assert "--vae given without --model or --dit" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--dit", str(files["a"]["dit"]), "--tokenizer",
                 str(files["a"]["tokenizer"]), "--out", str(tmp_path / "x.png")]) == 2
    assert "--text-encoder" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--dit", str(files["a"]["text_encoder"]),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "text encoder file, not a diffusion model" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["generate", "--prompt", "x", *model_options(files["a"]), "--device", "cuda",
                     "--out", str(tmp_path / "x.png")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", *model_options(files["a"]), "--device", "mps",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "only cpu and cuda" in capsys.readouterr().err
    assert main(["erase", "--concept", "cat", "--method", "uce-text", *model_options(files["a"]),
                 "--out", str(tmp_path / "u.safetensors")]) == 2
    assert "uce-text" in capsys.readouterr().err


def test_interrupted_real_erase_resumes_to_the_uninterrupted_result(files, tmp_path):
    from zerase_core.engine.erase_config import EraseConfig
    paths = files["a"]
    source = parts(dit=paths["dit"], text_encoder=paths["text_encoder"], tokenizer=paths["tokenizer"])
    prompts = real_run.real_prompt_set(["cat"], None, None)
    config = real_run.prepare_config(EraseConfig(steps=3, rank=2, pool_prompts=1, sample_steps=1, shuffle_bank=2), 32)
    whole = real_run.erase_real(source, prompts, config, tmp_path / "whole.safetensors")

    def stop(step, total, metrics):
        if step == 1:
            raise KeyboardInterrupt
    part = tmp_path / "part.safetensors"
    with pytest.raises(KeyboardInterrupt):
        real_run.erase_real(source, prompts, config, part, on_step=stop)
    info = read_erasure(part)[0]
    assert info.partial and info.steps_done == 1 and info.training["erase"] == list(prompts.erase)
    resumed = tmp_path / "resumed.safetensors"
    assert main(["erase", "--resume", str(part), *model_options(paths), "--out", str(resumed)]) == 0
    expected, found = read_erasure(whole)[1], read_erasure(resumed)[1]
    assert read_erasure(resumed)[0].steps_done == 3 and set(expected) == set(found)
    for key, value in expected.items():
        assert torch.allclose(found[key], value, atol=1e-6), key
