"""Gemma's tokenizer read from inside a ComfyUI text-encoder file (`spiece_model`, the serialized SentencePiece model)
gives the same token ids, offsets and features as transformers' GemmaTokenizer built from the same .model file, and
as that tokenizer saved as a diffusers tokenizer/ folder; a file without one is refused naming both ways to fix it."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("sentencepiece", reason="sentencepiece is not installed (pip install -e \".[test]\")")
pytest.importorskip("google.protobuf", reason="transformers needs protobuf to convert a .model file")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from gemma_spiece import piece_count, save_gemma_file, train_spiece, transformers_tokenizer  # noqa: E402
from test_lumina_real import tiny_gemma2  # noqa: E402

from zerase_core.real.gemma import GemmaConditioner, gemma_conditioner, load_gemma2, load_gemma_tokenizer  # noqa: E402
from zerase_core.real.gemma_tokenizer import SpieceGemmaTokenizer, has_embedded_tokenizer  # noqa: E402
from zerase_core.real.sources import ModelSource  # noqa: E402
from zerase_core.real.world import parts  # noqa: E402

PROMPTS = ["a photo of a cat", "a painting by Van Gogh, oil painting of a starry night", "",
           "  two  spaces,\ttabs and\nnew lines ", "ünïcödé — 日本 and emoji 🐈 are byte pieces",
           "numbers 2024 and 3.14", "<end_of_turn> a user-defined piece", "CAPS Unseen WORDS xyzzy"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gemma-spiece")
    proto = train_spiece()
    reference, tokenizer_folder = transformers_tokenizer(proto, folder)
    encoder = tiny_gemma2(piece_count(proto), seed=4)
    return {"proto": proto, "reference": reference, "folder": tokenizer_folder,
            "with": save_gemma_file(folder / "gemma_with.safetensors", encoder, proto),
            "without": save_gemma_file(folder / "gemma_without.safetensors", encoder, None)}


def test_ids_and_offsets_equal_transformers_gemma_tokenizer(files):
    core = load_gemma_tokenizer(files["with"])
    assert isinstance(core, SpieceGemmaTokenizer) and len(core) == len(files["reference"])
    from_folder = load_gemma_tokenizer(files["folder"])                    # the diffusers tokenizer/ folder path
    conditioner = GemmaConditioner(core, None)
    for prompt in PROMPTS:
        for text in (prompt, conditioner.text(prompt)):                  # bare, and with the system prompt
            ours = core(text, truncation=True, max_length=256, return_offsets_mapping=True)
            theirs = files["reference"](text, truncation=True, max_length=256, return_offsets_mapping=True)
            assert ours["input_ids"] == theirs["input_ids"] == from_folder(text)["input_ids"], text
            assert ours["input_ids"][0] == 2 and 1 not in ours["input_ids"][1:]      # BOS, never EOS
            assert [tuple(pair) for pair in ours["offset_mapping"][1:]] == \
                [tuple(pair) for pair in theirs["offset_mapping"][1:]], text
    long = " ".join(["a painting of a starry night"] * 80)
    ours, theirs = core(long, truncation=True, max_length=256), files["reference"](long, truncation=True,
                                                                                   max_length=256)
    assert len(ours["input_ids"]) == 256 and ours["input_ids"] == theirs["input_ids"]
    assert core.decode(core("a photo of a cat")["input_ids"]) == "a photo of a cat"


def test_features_and_keyword_rows_equal_the_folder_tokenizers(files):
    model = load_gemma2(files["with"])
    ours = GemmaConditioner(load_gemma_tokenizer(files["with"]), model)
    theirs = GemmaConditioner(load_gemma_tokenizer(files["folder"]), model)
    prompts = ["a painting by Van Gogh", "", "a photo of a cat"]
    features, lengths = ours.encode(prompts)
    expected, expected_lengths = theirs.encode(prompts)
    assert torch.equal(lengths, expected_lengths) and torch.equal(features, expected)
    assert int(lengths[0]) > len(ours._tokens("a painting by Van Gogh")["input_ids"]) - 1 > 20   # system prompt in
    for prompt, keyword in (("a painting by Van Gogh", "Van Gogh"), ("a photo of a cat", "cat")):
        rows = ours.keyword_positions(prompt, keyword)
        assert rows and rows == theirs.keyword_positions(prompt, keyword)
        ids = ours._tokens(prompt)["input_ids"]
        assert ours.tokenizer.decode([ids[row] for row in rows]).strip() == keyword


def test_single_files_find_the_tokenizer_inside_the_gemma_file(files, tmp_path):
    assert has_embedded_tokenizer(files["with"]) and not has_embedded_tokenizer(files["without"])
    lumina = ModelSource(kind="lumina2", dit=tmp_path / "dit.safetensors", text_encoder=files["with"])
    features = gemma_conditioner(lumina).encode(["a photo of a cat"])[0]
    explicit = gemma_conditioner(ModelSource(kind="lumina2", dit=lumina.dit, text_encoder=files["with"],
                                             tokenizer=files["folder"])).encode(["a photo of a cat"])[0]
    assert torch.equal(features, explicit)
    for bare in (ModelSource(kind="lumina2", dit=lumina.dit, text_encoder=files["without"]),):
        with pytest.raises(ValueError) as error:
            gemma_conditioner(bare)
        message = str(error.value)
        assert "--tokenizer" in message and "spiece_model" in message and str(files["without"]) in message


def test_parts_use_the_embedded_tokenizer_only_when_there_is_one(files, tmp_path):
    from real_models import lumina_single_files
    made = lumina_single_files(tmp_path / "single")
    found = parts(dit=made["dit"], text_encoder=files["with"], vae=made["vae"])
    assert found.kind == "lumina2" and found.tokenizer == files["with"]
    given = parts(dit=made["dit"], text_encoder=files["with"], vae=made["vae"], tokenizer=files["folder"])
    assert given.tokenizer == files["folder"]                            # --tokenizer wins
    assert parts(dit=made["dit"], text_encoder=files["without"], vae=made["vae"]).tokenizer is None
    with pytest.raises(ValueError, match=r"carries no Gemma tokenizer|has none"):
        load_gemma_tokenizer(files["without"])
