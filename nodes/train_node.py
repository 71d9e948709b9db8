"""ZEraseTrain: Z-Erase (or a baseline) trained in the graph on the MODEL's own NextDiT; saves the erasure file."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from zerase_core.engine.erase_config import METHODS, EraseConfig
from zerase_core.engine.settings import described, node_input

from . import comfy_bridge, training
from .ids import CATEGORY, ERASURE_TYPE, TRAIN, display_name

Erasure = io.Custom(ERASURE_TYPE)
NO_RESUME = "none"
logger = logging.getLogger(__name__)


def _setting(name: str, **options) -> io.Input:
    """The widget of EraseConfig field `name`: an int or float input as its Setting's kind, with its default, range,
    step and tooltip (zerase_core.engine.settings)."""
    widget = io.Int if described(EraseConfig)[name][1].kind is int else io.Float
    return widget.Input(name, **options, **node_input(EraseConfig, name))


def _inputs() -> list:
    return [
        io.Model.Input(
            "model",
            tooltip="The Z-Image MODEL to erase from (LoadSingleStreamDiT, or UNETLoader with a "
            "Z-Image file). It is not modified: the output is a clone.",
        ),
        io.Clip.Input("clip", tooltip="The MODEL's text encoder (Qwen3-4B for Z-Image; the nano CLIP for nano)."),
        io.String.Input(
            "concepts",
            multiline=True,
            default="star",
            tooltip="What to erase. Nano model: concept word(s), one per line (e.g. star). Z-Image: "
            "erase prompt(s) containing the concept, one per line.",
        ),
        io.String.Input(
            "keywords",
            default="",
            tooltip="Word(s) whose attention is suppressed, comma-separated (multi-token words are fine: "
            "'Van Gogh'). Empty: the concept lines. Nano: leave empty.",
        ),
        io.String.Input(
            "anchors",
            multiline=True,
            default="",
            tooltip="What each erase prompt should draw instead, and prompts to preserve: one per line, "
            "paired with the erase prompts (e.g. 'a person' for a celebrity). Empty: generated "
            "(nano: the concept replaced by another value) or the erase prompts without the "
            "keywords.",
        ),
        io.String.Input(
            "preserve",
            multiline=True,
            default="",
            optional=True,
            tooltip="Extra prompts whose outputs must not change, one per line (added to the anchors).",
        ),
        io.Combo.Input(
            "method",
            options=list(METHODS),
            default="zerase",
            tooltip="zerase: stream-gated adapters with Lagrangian preservation (the paper). Baselines: "
            "esd, ac, eraseanything, naive-esd (gate open on every token: collapses).",
        ),
        _setting("steps"),
        _setting("learning_rate"),
        _setting("rank"),
        io.Combo.Input(
            "targets",
            options=list(training.TARGETS),
            default="auto",
            tooltip="Rows of each joint layer's fused attention.qkv that get an adapter. auto: the concept "
            "kind's rows (q and k, the paper's released checkpoint; q, k and v for colours and "
            "other attributes, which Q+K alone erased weakly on the nano world, and for objects "
            "and styles, whose keyword must carry the anchor's content under the anchor target).",
        ),
        _setting("epsilon"),
        _setting("beta"),
        _setting("eta"),
        io.Int.Input(
            "seed",
            default=0,
            min=0,
            max=2**31 - 1,
            tooltip="Seed of the adapters, the x_t pool and the shuffles; same seed, same erasure.",
        ),
        io.Int.Input(
            "resolution",
            default=64,
            min=16,
            max=2048,
            step=16,
            tooltip="Image size of the training samples (64 for the nano model; 512+ for Z-Image).",
        ),
        io.String.Input(
            "save_name",
            default="zerase-erasure",
            tooltip="File name in models/zerase (.safetensors is added). An interrupted run saves a "
            "partial file under this name.",
        ),
        io.Combo.Input(
            "resume_from",
            options=[NO_RESUME, *comfy_bridge.erasure_files()],
            default=NO_RESUME,
            tooltip="A partial erasure file to continue (its own settings are used, not this node's).",
        ),
        io.Int.Input(
            "preview_every",
            default=0,
            min=0,
            max=100_000,
            tooltip="Show a preview image every N steps (needs the vae input); 0 = off.",
        ),
        io.Vae.Input("vae", optional=True, tooltip="Only for previews during training."),
        io.Combo.Input(
            "concept_kind",
            options=list(training.CONCEPT_KINDS),
            default="auto",
            advanced=True,
            tooltip="Sets the kind's presets (ε, adapted rows, L_attn weight, the anchor target's η: 0.5 for "
            "attributes such as colours, else 1); auto: from the nano concept, else object.",
        ),
        _setting("sample_steps", advanced=True),
        _setting("sample_cfg", advanced=True),
        _setting("batch_size", advanced=True),
        _setting("pool_prompts", advanced=True),
        # optional, so that its value comes after `preserve` in saved workflows: older ones keep loading unchanged
        _setting("shuffle_bank", optional=True, advanced=True),
    ]


class ZEraseTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=TRAIN,
            display_name=display_name("Train Erasure"),
            category=CATEGORY,
            is_output_node=True,
            description="Erases concepts from a single-stream DiT with text-gated adapters (Z-Erase), in the graph.",
            inputs=_inputs(),
            hidden=[io.Hidden.unique_id],
            outputs=[
                io.Model.Output(display_name="erased_model"),
                Erasure.Output(display_name="ERASURE"),
                io.LossMap.Output(display_name="loss"),
            ],
        )

    @classmethod
    def execute(cls, model, clip, save_name, resume_from, preview_every, vae=None, **widgets) -> io.NodeOutput:
        """`widgets`: the inputs named after TrainInputs' fields; an optional one left out takes TrainInputs'
        default, which is the widget's."""
        shuffle_bank = widgets.get("shuffle_bank", EraseConfig.shuffle_bank)
        request = training.TrainInputs(
            **{
                **widgets,
                "preserve": widgets.get("preserve") or "",
                "shuffle_bank": comfy_bridge.resolve_shuffle_bank(shuffle_bank, comfy_bridge.on_gpu(model)),
            }
        )
        reporter = comfy_bridge.StepReporter(getattr(cls.hidden, "unique_id", None), request.steps)
        reporter.progress("load", 0, 1)  # the page shows the node working from the first second
        base = comfy_bridge.base_info(model)
        out = comfy_bridge.save_path(save_name)
        resume = None
        if resume_from != NO_RESUME:
            resume = comfy_bridge.read_resume(comfy_bridge.existing_erasure(resume_from, "resume_from"), base.nano)
        config = resume.config if resume else training.erase_config(request, base.nano)
        prompts = resume.prompts if resume else training.prompt_set(request, base.nano)
        concept_names = resume.concepts if resume else training.concept_list(request, base.nano)
        conditioner = comfy_bridge.conditioner_for(clip, base.config)
        conditioner, note = comfy_bridge.encode_before_training(
            clip, conditioner, prompts, config, comfy_bridge.on_gpu(model)
        )
        notes = [note]
        memory = comfy_bridge.plan(
            model, base.config, config.latent_size[0] * training.LATENT_FACTOR, config.batch_size, config.rank
        )
        with comfy_bridge.training(model, memory) as context:
            notes.append(context.memory_report)
            logger.info("ZEraseTrain: %s", "; ".join(notes))
            reporter.progress("load", 1, 1)
            if vae is not None and preview_every:
                reporter.preview = comfy_bridge.preview_sampler(
                    context.denoiser,
                    conditioner,
                    vae,
                    prompts.erase[0],
                    config.latent_size,
                    config.sample_steps,
                    config.sample_cfg,
                    base.config.shift,
                )
                reporter.preview_every = preview_every
            result = training.run_erasure(
                context.network,
                conditioner,
                prompts,
                config,
                out=out,
                base_config=base.config.to_dict(),
                concepts=concept_names,
                denoise=context.denoiser,
                in_channels=base.config.in_channels,
                shift=base.config.shift,
                resume=resume,
                attach=context.attached,
                on_step=reporter,
                progress=reporter.progress,
                on_ready=lambda trainer: setattr(context.denoiser, "check_interrupt", False),
                build_batch=memory.build_batch,
            )
        erasure = comfy_bridge.ErasureData(result.info, result.tensors, out)
        erased = comfy_bridge.with_erasures(model, [comfy_bridge.ErasureEntry(erasure, 1.0)])
        return io.NodeOutput(erased, erasure, _loss_map(result.history), ui={"text": [_summary(result), *notes]})


def _loss_map(history) -> dict[str, list[float]]:
    names = {
        "loss": "loss_total",
        "L_er": "loss_erase",
        "L_attn": "loss_attention",
        "L_pr": "loss_preserve",
        "lambda": "lambda",
    }
    return {key: [record.metrics.get(name, 0.0) for record in history] for key, name in names.items()}


def _summary(result) -> str:
    info = result.info
    last = result.history[-1].metrics if result.history else {}
    return (
        f"{info.method}: erased {', '.join(info.concepts)} in {info.steps_done} steps -> {result.path.name}; "
        f"L_er {last.get('loss_erase', 0):.4f}, L_pr {last.get('loss_preserve', 0):.4f}, "
        f"λ {last.get('lambda', 0):.4f}"
    )
