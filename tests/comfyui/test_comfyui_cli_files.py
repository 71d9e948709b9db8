"""One erasure file format across front ends, on a tiny random Z-Image given as ComfyUI single files.

The DiT file is loaded by LoadSingleStreamDiT on the ComfyUI side and by `--dit` on the CLI side; the text encoder
is ComfyUI's own Qwen3 class at hidden size 64 (test_comfyui_real_format.tiny_qwen3_clip), and the CLI reads the
same weights from a qwen_3_4b-style file. A file trained by `erase` applies in ApplyErasedWeights and samples the
same latents as the CLI's generate path (`sample_real`, the DiT's output before the VAE; ComfyUI's samples are in
the VAE's latent space: ours / 0.3611 + 0.1159); a ZEraseTrain file does the same in the CLI. A file made for
another base is refused by both front ends with both fingerprints in the message.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="the CLI's real text encoder runs through transformers")

CONFIG_KW = dict(dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, axes_dims=(8, 12, 12), cap_feat_dim=64,
                 pad_tokens_multiple=8)
PROMPT = "a painting by Van Gogh"
SIZE, STEPS = 32, 3


@pytest.fixture(scope="module")
def files(pack, comfy, tmp_path_factory):
    import folder_paths
    from safetensors.torch import save_file
    from test_comfyui_real_format import tiny_qwen3_clip
    from zerase_core.model.checkpoint import save_dit
    from zerase_core.model.config import DiTConfig
    from zerase_fixtures import randomized_dit

    folder = tmp_path_factory.mktemp("diffusion_models")
    config = DiTConfig(**CONFIG_KW)
    save_dit(randomized_dit(config, seed=0, std=0.08), folder / "z_image_tiny.safetensors")
    save_dit(randomized_dit(config, seed=1, std=0.08), folder / "z_image_tiny_other.safetensors")
    clip = tiny_qwen3_clip()
    state = clip.cond_stage_model.state_dict()
    text_encoder = folder.parent / "qwen_3_tiny.safetensors"
    save_file({key.split("transformer.", 1)[1]: value.contiguous() for key, value in state.items()
               if "transformer." in key}, str(text_encoder))
    saved = folder_paths.folder_names_and_paths["diffusion_models"]
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(folder)], saved[1])
    from zerase_core.real.world import comfy_tokenizer
    yield {"folder": folder, "clip": clip, "text_encoder": text_encoder, "tokenizer": comfy_tokenizer()}
    folder_paths.folder_names_and_paths["diffusion_models"] = saved


def _source(files, name="z_image_tiny.safetensors"):
    from zerase_core.real.world import parts
    return parts(dit=files["folder"] / name, text_encoder=files["text_encoder"], tokenizer=files["tokenizer"])


def _noise(seed: int) -> torch.Tensor:
    from zerase_core.model.sampling import initial_noise
    return initial_noise((1, 16, SIZE // 8, SIZE // 8), seed)


def _comfy_samples(model, clip, noise: torch.Tensor) -> torch.Tensor:
    import comfy.sample
    import nodes
    with torch.inference_mode():
        positive = nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
        return comfy.sample.sample(model, noise.clone(), STEPS, 1.0, "euler", "simple", positive, positive,
                                   torch.zeros_like(noise), seed=0, disable_pbar=True).float()


def _cli_samples(files, erasure, noise: torch.Tensor) -> torch.Tensor:
    from zerase_core.real.run import sample_real
    latents = sample_real(_source(files), [PROMPT], [0], STEPS, 1.0, SIZE, SIZE, [erasure] if erasure else [],
                          noise=noise)
    return latents / 0.3611 + 0.1159           # the Flux latent format's process_out, as KSampler returns them


def _load(pack, name="z_image_tiny.safetensors"):
    with torch.inference_mode():
        return pack["nodes"]["LoadSingleStreamDiT"].execute(name).result[0]


def _relative(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_features_of_the_cli_text_encoder_equal_comfyuis(files):
    import nodes
    from zerase_core.real.world import conditioner
    with torch.inference_mode():
        theirs = nodes.CLIPTextEncode().encode(files["clip"], PROMPT)[0][0][0]
    ours, lengths = conditioner(_source(files)).encode([PROMPT])
    assert ours.shape == theirs.shape and int(lengths[0]) == theirs.shape[1]
    assert _relative(ours, theirs.float()) < 1e-4


def test_cli_erasure_applies_in_comfyui_with_the_same_samples(pack, files):
    from zerase_core.cli import main
    out = pack["erasures"] / "cli-van-gogh.safetensors"
    assert main(["erase", "--concept", "Van Gogh", "--prompt", PROMPT, "--anchor", "a painting", "--dit",
                 str(files["folder"] / "z_image_tiny.safetensors"), "--text-encoder", str(files["text_encoder"]),
                 "--tokenizer", str(files["tokenizer"]), "--steps", "3", "--lr", "0.02", "--pool-prompts", "1",
                 "--sample-steps", "1", "--rank", "2", "--resolution", "32", "--out", str(out)]) == 0
    model, noise = _load(pack), _noise(11)
    with torch.inference_mode():
        applied = pack["nodes"]["ApplyErasedWeights"].execute(model=model, strength=1.0, allow_other_base=False,
                                                              erasure_file_1=out.name).result[0]
    theirs, ours = _comfy_samples(applied, files["clip"], noise), _cli_samples(files, out, noise)
    base = _comfy_samples(model, files["clip"], noise)
    assert _relative(ours, theirs) < 1e-4
    assert _relative(base, theirs) > 1e-3, "the erasure did not change the samples"
    assert _relative(_cli_samples(files, None, noise), base) < 1e-4


def test_zerase_train_file_applies_in_the_cli_with_the_same_samples(pack, files):
    model, noise = _load(pack), _noise(12)
    with torch.inference_mode():
        erased = pack["nodes"]["ZEraseTrain"].execute(
            model=model, clip=files["clip"], concepts=PROMPT, keywords="Van Gogh", anchors="a painting",
            method="zerase", steps=3, learning_rate=0.02, rank=2, targets="auto", epsilon=0.0, beta=0.1, eta=2.0,
            seed=0, resolution=SIZE, save_name="node-van-gogh", resume_from="none", preview_every=0,
            sample_steps=1, sample_cfg=1.0, batch_size=1, pool_prompts=1).result[0]
    path = pack["erasures"] / "node-van-gogh.safetensors"
    theirs, ours = _comfy_samples(erased, files["clip"], noise), _cli_samples(files, path, noise)
    assert _relative(ours, theirs) < 1e-4
    assert _relative(_comfy_samples(model, files["clip"], noise), theirs) > 1e-3


def test_a_file_for_another_base_is_refused_by_both_front_ends(pack, files, tmp_path, capsys):
    from zerase_core.model.checkpoint import fingerprint
    from zerase_core.cli import main
    from zerase_core.formats.erasure_file import read_erasure
    from zerase_core.real.sources import load_transformer
    path = pack["erasures"] / "cli-van-gogh.safetensors"
    if not path.exists():
        pytest.skip("needs the file of test_cli_erasure_applies_in_comfyui_with_the_same_samples")
    made_for = read_erasure(path)[0].base_fingerprint
    other = fingerprint(load_transformer(files["folder"] / "z_image_tiny_other.safetensors"))
    with torch.inference_mode(), pytest.raises(ValueError) as refused:
        pack["nodes"]["ApplyErasedWeights"].execute(model=_load(pack, "z_image_tiny_other.safetensors"), strength=1.0,
                                                    allow_other_base=False, erasure_file_1=path.name)
    assert made_for in str(refused.value) and other in str(refused.value)
    assert main(["generate", "--prompt", PROMPT, "--size", "32", "--steps", "1", "--dit",
                 str(files["folder"] / "z_image_tiny_other.safetensors"), "--text-encoder", str(files["text_encoder"]),
                 "--tokenizer", str(files["tokenizer"]), "--erasure", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert made_for in err and other in err
