"""What the commands share: the one-line usage error, the progress phases' units and the nano world they run on."""

from __future__ import annotations

# tqdm's unit per progress phase (zerase_core.common.progress): sampler steps of a batch, cached chunks, optimizer
# steps, scored (strength, concept) pairs
PHASE_UNITS = {
    "x_t pool": "sampler step",
    "teacher cache": "chunk",
    "shuffle bank": "chunk",
    "train": "step",
    "strength search": "score",
    "compare": "part",
}


class UsageError(ValueError):
    """Bad input: reported as one line, exit status 2."""


def load_world(args):
    """The nano world of a command (the bundled one, or its DiT from --base); refuses --model/--dit."""
    from ..nano.world import NanoWorld
    from ..real.run import real_source

    if real_source(args) is not None:
        raise UsageError(
            "this command runs the nano model only; --model/--dit work with erase, erase-many,"
            " generate, evaluate and export-lora"
        )
    world = NanoWorld.load()
    if getattr(args, "base", None) is not None:
        from ..model.checkpoint import load_dit

        dit = load_dit(args.base)
        width = world.text_encoder.config.width
        if dit.config.cap_feat_dim != width:
            raise UsageError(
                f"--base {args.base} expects caption features of width {dit.config.cap_feat_dim}; "
                f"the nano text encoder gives {width} (only nano-compatible DiTs run in the CLI)"
            )
        world.dit = dit
    return world
