"""Text conditioners for the trainer from a ComfyUI CLIP: features per prompt and the keyword's token rows."""

from __future__ import annotations

import numpy
import torch

from zerase_core.common.prompts import PromptSet, TextConditioner
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.methods import shuffles
from zerase_core.engine.shuffle_bank import PreparedConditioner, ShuffleBank
from zerase_core.model.config import DiTConfig

from .nano_objects import NanoTextModel


class ClipConditioner:
    """TextConditioner over a ComfyUI CLIP (Qwen3-4B for Z-Image): features per prompt, keyword rows by tokenizer.

    Keyword positions come from the real token sequence the encoder sees (chat template included): the ids are
    decoded prefix by prefix to get each token's character span, and every token overlapping the keyword's span
    inside the user's prompt is a keyword row ("Van Gogh" -> " Van", " G", "ogh").
    `template` (one `{}`) wraps every non-empty prompt: Lumina-2's system prompt (`prompt_template`).
    """

    def __init__(self, clip, template: str | None = None):
        self.clip, self.template = clip, template
        self._features: dict[str, torch.Tensor] = {}

    def text(self, prompt: str) -> str:
        return prompt_text(prompt, self.template)

    def _ids(self, prompt: str) -> list[int]:
        tokens = self.clip.tokenize(self.text(prompt))
        return [
            int(pair[0])
            for chunks in tokens.values()
            for chunk in chunks
            for pair in chunk
            if isinstance(pair[0], (int, numpy.integer))
        ]

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> torch.Tensor:
        if prompt not in self._features:
            cond = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(self.text(prompt)), show_pbar=False)[0][0]
            with torch.inference_mode(False):  # a normal tensor, whichever mode the node runs in
                self._features[prompt] = cond[0].float().cpu().clone()
        return self._features[prompt]

    def encode(self, prompts: list[str]):
        features = [self._encode_one(prompt) for prompt in prompts]
        width = max(feature.shape[0] for feature in features)
        batch = torch.zeros(len(prompts), width, features[0].shape[-1])
        for row, feature in enumerate(features):
            batch[row, : feature.shape[0]] = feature
        return batch, torch.tensor([feature.shape[0] for feature in features])

    def keyword_positions(self, prompt: str, keyword: str) -> list[int]:
        ids = self._ids(prompt)
        rows = self._encode_one(prompt).shape[0]
        if rows != len(ids):
            raise ValueError(
                f"the text encoder returned {rows} rows for {len(ids)} tokens of {prompt!r}; keyword rows "
                f"cannot be located for this CLIP"
            )
        decode = self.clip.tokenizer.decode
        ends = [len(decode(ids[: index + 1], skip_special_tokens=False)) for index in range(len(ids))]
        text = decode(ids, skip_special_tokens=False)
        start = text.rfind(prompt)
        region = (start, start + len(prompt)) if start >= 0 else (0, len(text))
        import re

        positions = set()
        for match in re.finditer(rf"(?i)(?<!\w){re.escape(keyword.strip())}(?!\w)", text[region[0] : region[1]]):
            low, high = region[0] + match.start(), region[0] + match.end()
            for index, end in enumerate(ends):
                begin = ends[index - 1] if index else 0
                if begin < high and end > low:
                    positions.add(index)
        return sorted(positions)

    def check_keyword(self, keyword: str) -> None:
        if not keyword.strip():
            raise ValueError("a keyword is empty; give the word(s) to erase, e.g. 'Van Gogh'")


def prompt_template(config: DiTConfig) -> str | None:
    """Lumina-2 was trained on "{system prompt} <Prompt Start> {prompt}" (ComfyUI's CLIPTextEncodeLumina2, diffusers'
    Lumina2Pipeline): its prompts are wrapped so; Z-Image's are used as written."""
    if config.kind != "lumina2":
        return None
    from zerase_core.real.gemma import LUMINA_TEMPLATE

    return LUMINA_TEMPLATE


def prompt_text(prompt: str, template: str | None) -> str:
    """The text the encoder sees: the empty (unconditional) prompt stays bare, as Lumina2Pipeline's negative."""
    return template.format(prompt) if template is not None and prompt else prompt


def conditioner_for(clip, config: DiTConfig):
    """The nano CLIP gets the CLI's NanoConditioner (same features, same keyword rows); others ClipConditioner.

    Refuses a CLIP whose features do not fit the MODEL's caption projection (e.g. Qwen3-4B with the nano model).
    """
    if clip is None or not hasattr(clip, "tokenize"):
        raise ValueError("the clip input is missing or not a CLIP; connect the MODEL's text encoder")
    model = getattr(clip, "cond_stage_model", None)
    conditioner: TextConditioner
    if isinstance(model, NanoTextModel):
        from zerase_core.nano.prompts import NanoConditioner

        conditioner = NanoConditioner(model.encoder)
    else:
        conditioner = ClipConditioner(clip, prompt_template(config))
    width = conditioner.encode([""])[0].shape[-1]
    if width != config.cap_feat_dim:
        raise ValueError(
            f"the CLIP gives {width}-wide text features but this MODEL reads {config.cap_feat_dim}-wide "
            f"ones; connect the MODEL's own text encoder (Qwen3-4B for Z-Image, the nano CLIP for nano)"
        )
    return conditioner


def training_prompts(prompts: PromptSet, config: EraseConfig) -> list[str]:
    """Every prompt the trainer encodes with a shuffle bank: erase, anchors, mapped, preserve, empty, and the word
    orders. The bank is drawn as the trainer draws it (its own seeded stream over the erase prompts in order; the
    trainer's pool may use a prefix of them, whose orders come first and are the same)."""
    needed = [*prompts.erase, *prompts.anchors, *prompts.targets, *prompts.preserve, ""]
    if config.shuffle_bank and shuffles(config.method):
        needed += ShuffleBank(prompts, prompts.erase, config.shuffle_bank, config.seed).prompts()
    return list(dict.fromkeys(needed))


def prepare(conditioner, prompts: PromptSet, config: EraseConfig, extra: tuple[str, ...] = ()) -> PreparedConditioner:
    """Features and keyword rows of every prompt of the run, encoded now: the result holds no text encoder."""
    for keyword in prompts.keywords:
        conditioner.check_keyword(keyword)
    return PreparedConditioner(conditioner, [*training_prompts(prompts, config), *extra], prompts)
