"""`erase`, `generate`, `evaluate`, `export-lora` and `erase-many` on a tiny random Lumina-Image-2.0 from the command
line, as ComfyUI single files (--dit/--text-encoder/--vae/--tokenizer; without --tokenizer when the Gemma file
carries its SentencePiece model, as ComfyUI's does) and as a diffusers folder (Lumina2Pipeline), built in fixtures;
erasure files of the other family (Z-Image) are refused naming both fingerprints, both ways; a missing part is named
before sampling."""
from __future__ import annotations

import gc
import json

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e \".[real]\")")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from real_models import (QUICK_ERASE, lumina_comfy_files, lumina_diffusers_folder, lumina_single_files,  # noqa: E402
                         model_options, single_files, tokenizer_folder)
from test_evaluate_command import CONTRACT  # noqa: E402
from zerase_core.model.checkpoint import fingerprint  # noqa: E402
from zerase_core.cli import main  # noqa: E402
from zerase_core.formats.erasure_file import read_erasure  # noqa: E402
from zerase_core.real import run as real_run  # noqa: E402
from zerase_core.real.sources import load_transformer  # noqa: E402
from zerase_core.real.world import LUMINA2, parts  # noqa: E402


@pytest.fixture(scope="module")
def lumina(tmp_path_factory):
    return lumina_single_files(tmp_path_factory.mktemp("lumina-single"))


@pytest.fixture(scope="module")
def lumina_folder(tmp_path_factory):
    return lumina_diffusers_folder(tmp_path_factory.mktemp("lumina-diffusers") / "Lumina-Image-2.0-Tiny")


@pytest.fixture
def never_together(monkeypatch):
    """Wrap (not replace) the DiT loader of erase/generate and of evaluate: when a DiT is mapped, no Gemma-2 model
    may be alive."""
    from zerase_core.real import evaluate as real_evaluate
    real_load, seen = real_run.load_transformer, []

    def checked(source, *rest, **options):
        gc.collect()
        seen.append(sum(type(thing) is transformers.Gemma2Model for thing in gc.get_objects()))
        return real_load(source, *rest, **options)
    monkeypatch.setattr(real_run, "load_transformer", checked)
    monkeypatch.setattr(real_evaluate, "load_transformer", checked)
    return seen


def test_single_files_erase_generate_and_export(lumina, tmp_path, capsys, never_together):
    out = tmp_path / "cat.safetensors"
    assert main(["erase", "--concept", "cat", *model_options(lumina), *QUICK_ERASE, "--out", str(out)]) == 0
    assert never_together == [0], "the Gemma text encoder was alive when the DiT was loaded"
    assert "encode prompts" in capsys.readouterr().err
    info, tensors, _ = read_erasure(out)
    dit = load_transformer(lumina["dit"])
    assert dit.config.kind == "lumina2" and info.base_fingerprint == fingerprint(dit)
    assert info.base_config["kind"] == "lumina2" and info.training["erase"][1] == "a picture of cat"
    assert info.steps_done == 2 and any(tensor.abs().sum() > 0 for tensor in tensors.values())

    source = parts(**{name: lumina[name] for name in ("dit", "text_encoder", "vae", "tokenizer")})
    plain = real_run.generate_real(source, ["a photo of cat"], [7], 3, 4.0, 32, 48)
    erased = real_run.generate_real(source, ["a photo of cat"], [7], 3, 4.0, 32, 48, [out], [4.0])
    assert plain.shape == (1, 3, 32, 48) and not torch.equal(plain, erased), "the erasure changed nothing"
    for extra in ([], ["--erasure", str(out)]):           # Lumina-2's default sampler: 25 steps at cfg 4
        png = tmp_path / f"grid{len(extra)}.png"
        assert main(["generate", "--prompt", "a photo of cat", "--width", "48", "--height", "32",
                     *model_options(lumina), *extra, "--out", str(png)]) == 0
        assert png.stat().st_size > 0
        assert f"{LUMINA2['steps']} steps, cfg 4" in capsys.readouterr().out
    assert never_together == [0, 0, 0, 0, 0]
    assert main(["generate", "--prompt", "x", "--size", "32", "--preset", "turbo", *model_options(lumina),
                 "--out", str(tmp_path / "t.png")]) == 2
    assert "--preset turbo is for z-image, but the model is lumina2; use --preset lumina2" in capsys.readouterr().err

    # export-lora: the CLI's erasures adapt the image-text layers (never a stock LoRA); a context_refiner erasure
    # exports only on q: Lumina-2's k/v (GQA) are narrower than ComfyUI's LoRA loader places them
    assert main(["export-lora", str(out), *model_options(lumina)]) == 2
    assert "cannot be a stock LoRA" in capsys.readouterr().err
    from zerase_core.engine.erase_config import EraseConfig
    prompts = real_run.real_prompt_set(["cat"], ["a photo of cat"], None)
    for slices, code in ((("q", "k"), 2), (("q",), 0)):
        config = real_run.prepare_config(EraseConfig(steps=1, rank=2, pool_prompts=1, sample_steps=1, shuffle_bank=2,
                                                     families=("context_refiner",), slices=slices), 32)
        refiner = real_run.erase_real(source, prompts, config, tmp_path / f"refiner-{''.join(slices)}.safetensors")
        lora = tmp_path / f"lora-{''.join(slices)}.stock-lora.safetensors"
        assert main(["export-lora", str(refiner), *model_options(lumina), "--out", str(lora)]) == code
        assert ("Only q-slice erasures of this model export" in capsys.readouterr().err) == (code == 2)
        assert lora.exists() == (code == 0)


def test_diffusers_folder_erase_generate_and_evaluate(lumina_folder, tmp_path, capsys, never_together):
    out = tmp_path / "star.safetensors"
    assert main(["erase", "--concept", "star", "--prompt", "a red star", "--anchor", "a red circle", "--model",
                 str(lumina_folder), *QUICK_ERASE, "--out", str(out)]) == 0
    info = read_erasure(out)[0]
    assert info.training["erase"] == ["a red star"] and info.training["targets"] == ["a red circle"]
    assert info.base_fingerprint == fingerprint(load_transformer(lumina_folder))
    png = tmp_path / "star.png"
    assert main(["generate", "--prompt", "a red star", "--size", "32", "--steps", "3", "--model", str(lumina_folder),
                 "--erasure", str(out), "--out", str(png)]) == 0
    assert "3 steps, cfg 4" in capsys.readouterr().out and png.stat().st_size > 0
    report = tmp_path / "result.json"
    assert main(["evaluate", "--erasure", str(out), "--model", str(lumina_folder), "--size", "32", "--steps", "2",
                 "--strength", "4", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    for key in CONTRACT:
        assert key in result and key in result["base"], key
    assert result["concepts"] == ["star"] and result["settings"]["cfg"] == LUMINA2["cfg"]
    assert result["change"]["erase"] > 0 and "--clip-checkpoint" in result["skipped"]["clip"]
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("dog | anchor=a photo of a puppy\n")
    assert main(["erase-many", str(concepts), "--out-dir", str(tmp_path / "many"), "--model", str(lumina_folder),
                 *QUICK_ERASE]) == 0
    dog = read_erasure(tmp_path / "many" / "dog.safetensors")[0]
    assert dog.training["anchors"] == ["a photo of a puppy"] and dog.base_fingerprint == info.base_fingerprint
    assert never_together == [0, 0, 0, 0]                  # erase, generate, evaluate, erase-many


def test_an_erasure_of_the_other_family_is_refused_naming_both_fingerprints(lumina, tmp_path, capsys):
    if not tokenizer_folder().is_dir():
        pytest.skip(f"no Qwen tokenizer files at {tokenizer_folder()} (set COMFYUI_PATH to a ComfyUI checkout)")
    z_image = single_files(tmp_path / "z-image")
    files = {"lumina2": (lumina, tmp_path / "lumina.safetensors"), "z-image": (z_image, tmp_path / "z.safetensors")}
    for options, out in files.values():
        assert main(["erase", "--concept", "cat", *model_options(options), *QUICK_ERASE, "--out", str(out)]) == 0
    for mine, theirs in (("lumina2", "z-image"), ("z-image", "lumina2")):
        made_for = read_erasure(files[theirs][1])[0].base_fingerprint
        here = fingerprint(load_transformer(files[mine][0]["dit"]))
        capsys.readouterr()
        for allow in ([], ["--allow-other-base"]):          # another family never applies
            assert main(["generate", "--prompt", "a cat", "--size", "32", "--steps", "1",
                         *model_options(files[mine][0]), "--erasure", str(files[theirs][1]), *allow,
                         "--out", str(tmp_path / "x.png")]) == 2
            err = capsys.readouterr().err
            assert made_for in err and here in err, err


def test_missing_lumina_parts_are_named_before_sampling(lumina, tmp_path, capsys):
    given = {"--dit": lumina["dit"], "--text-encoder": lumina["text_encoder"], "--vae": lumina["vae"],
             "--tokenizer": lumina["tokenizer"]}
    for left_out, expected in (("--tokenizer", "needs --tokenizer (the tokenizer/ folder of the diffusers download"),
                               ("--text-encoder", "needs --text-encoder (e.g. gemma_2_2b_fp16.safetensors)"),
                               ("--vae", "needs --vae (e.g. ae.safetensors)")):
        options = [str(part) for name, value in given.items() if name != left_out for part in (name, value)]
        assert main(["generate", "--prompt", "a cat", "--size", "32", "--steps", "1", *options,
                     "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert expected in err and "sample" not in err, err                   # before the first step
        assert ("encode prompts" in err) == (left_out == "--vae"), err      # after the erasure checks


def test_comfyui_single_files_need_no_tokenizer_folder(tmp_path, capsys, never_together):
    """gemma_2_2b_fp16.safetensors-style: the tokenizer is read from the text-encoder file's `spiece_model`."""
    pytest.importorskip("sentencepiece", reason="sentencepiece is not installed (pip install -e \".[real]\")")
    comfy = lumina_comfy_files(tmp_path / "comfy")
    options = model_options(comfy)
    assert "--tokenizer" not in options
    out = tmp_path / "cat.safetensors"
    assert main(["erase", "--concept", "cat", *options, *QUICK_ERASE, "--out", str(out)]) == 0
    info = read_erasure(out)[0]
    assert info.base_fingerprint == fingerprint(load_transformer(comfy["dit"])) and info.steps_done == 2
    png = tmp_path / "cat.png"
    assert main(["generate", "--prompt", "a photo of cat", "--size", "32", "--steps", "2", *options,
                 "--erasure", str(out), "--out", str(png)]) == 0
    assert png.stat().st_size > 0 and "2 steps, cfg 4" in capsys.readouterr().out
    assert never_together == [0, 0]
    source = parts(**comfy)
    assert source.tokenizer == comfy["text_encoder"]
    plain = real_run.generate_real(source, ["a photo of cat"], [3], 2, 4.0, 32, 32)
    erased = real_run.generate_real(source, ["a photo of cat"], [3], 2, 4.0, 32, 32, [out], [4.0])
    assert not torch.equal(plain, erased), "the erasure changed nothing"
