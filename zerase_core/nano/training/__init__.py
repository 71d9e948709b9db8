"""Training of the nano codec and evaluator, plus the loop, schedule and checkpoint helpers they share.

A run trains in time-limited chunks: `--seconds` bounds one chunk, `--steps` is the total target, and `--resume`
continues from the checkpoint in `--out` with the same learning-rate schedule and random streams. Checkpoints are a
safetensors file (model, optimizer and torch RNG tensors) plus a JSON sidecar (step, optimizer settings, numpy RNG
state), each written atomically; the JSON is written last and names the step, so a torn pair is detected.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"


def add_common_arguments(parser: argparse.ArgumentParser, part: str, steps: int, seconds: float, export: Path) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/nano") / part, help="checkpoint / work folder")
    parser.add_argument("--seconds", type=float, default=seconds, help="wall-time budget of this chunk")
    parser.add_argument("--steps", type=int, default=steps, help="total optimizer steps of the whole run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--export", type=Path, default=export, help="where to write the final weights file")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    # Measured: with other jobs on the 2 cores, 1 thread ran 4× faster than 2 (no spin-waits on a descheduled thread).
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads; use 1 when the cores are shared")


def learning_rate(step: int, total: int, base: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `floor` × base at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _atomic_write(path: Path, writer: Callable[[str], object]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        writer(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class TrainingState:
    """Everything a resumed run needs besides the model and optimizer."""

    step: int
    numpy_rng: numpy.random.Generator
    torch_rng: torch.Generator


def save_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{name}": value.detach().contiguous().clone() for name, value in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous().clone()
    tensors["torch_rng"] = state.torch_rng.get_state()
    _atomic_write(
        folder / CHECKPOINT_TENSORS, lambda target: save_file(tensors, target, metadata={"step": str(state.step)})
    )
    sidecar = {
        "step": state.step,
        "param_groups": optimizer_state["param_groups"],
        "numpy_rng": state.numpy_rng.bit_generator.state,
    }
    _atomic_write(folder / CHECKPOINT_JSON, lambda target: Path(target).write_text(json.dumps(sidecar)))


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainingState:
    tensors_path, json_path = folder / CHECKPOINT_TENSORS, folder / CHECKPOINT_JSON
    if not (tensors_path.exists() and json_path.exists()):
        raise FileNotFoundError(f"no checkpoint in {folder}; run once without --resume, or point --out at a run")
    sidecar = json.loads(json_path.read_text())
    tensors = load_file(str(tensors_path))
    model.load_state_dict({name[6:]: value for name, value in tensors.items() if name.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": sidecar["param_groups"]})
    numpy_rng = numpy.random.default_rng()
    numpy_rng.bit_generator.state = sidecar["numpy_rng"]
    torch_rng = torch.Generator()
    torch_rng.set_state(tensors["torch_rng"])
    return TrainingState(step=int(sidecar["step"]), numpy_rng=numpy_rng, torch_rng=torch_rng)


def seed_torch(seed: int, threads: int | None = None) -> None:
    """Set torch's CPU threads and global seed; call it before building the model, whose initial weights it fixes."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)


def start_training(
    folder: Path,
    model: torch.nn.Module,
    seed: int,
    resume: bool,
    parameters: Iterable[torch.nn.Parameter] | None = None,
    **adamw_options,
) -> tuple[torch.optim.AdamW, TrainingState]:
    """AdamW over `parameters` (default: all of the model's) and the state to train from: the checkpoint in `folder`
    when resuming, else step 0 with fresh random streams of `seed`."""
    parameters = model.parameters() if parameters is None else parameters
    optimizer = torch.optim.AdamW(parameters, **adamw_options)
    if not resume:
        return optimizer, TrainingState(0, numpy.random.default_rng(seed), torch.Generator().manual_seed(seed))
    state = load_checkpoint(folder, model, optimizer)
    print(f"resumed {type(model).__name__} training at step {state.step} from {folder}", flush=True)
    return optimizer, state


def train_chunk(
    args: argparse.Namespace,
    model: torch.nn.Module,
    loss_of_batch: Callable[[TrainingState], torch.Tensor],
    warmup: int,
    **adamw_options,
) -> TrainingState:
    """One chunk of a run of `add_common_arguments`'s options and --lr: AdamW (`start_training`), then `run_loop`
    with `warmup` steps of warm-up."""
    optimizer, state = start_training(args.out, model, args.seed, args.resume, lr=args.lr, **adamw_options)
    settings = LoopSettings(total_steps=args.steps, seconds=args.seconds, base_lr=args.lr, warmup=warmup)
    return run_loop(settings, args.out, model, optimizer, state, loss_of_batch)


@dataclass(frozen=True)
class LoopSettings:
    total_steps: int
    seconds: float
    base_lr: float
    warmup: int
    clip: float = 1.0
    checkpoint_every_s: float = 60.0
    progress_every_s: float = 20.0


def run_loop(
    settings: LoopSettings,
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    loss_of_batch: Callable[[TrainingState], torch.Tensor],
) -> TrainingState:
    """Optimise until `total_steps` or `seconds` run out; checkpoint every minute and at the end."""
    started = last_checkpoint = last_progress = time.monotonic()
    first_step, losses = state.step, []
    model.train()
    while state.step < settings.total_steps and time.monotonic() - started < settings.seconds:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state.step, settings.total_steps, settings.base_lr, settings.warmup)
        loss = loss_of_batch(state)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        optimizer.step()
        state.step += 1
        losses.append(loss.item())
        now = time.monotonic()
        if now - last_progress >= settings.progress_every_s:
            milliseconds = 1000 * (now - started) / (state.step - first_step)
            print(
                f"step {state.step}/{settings.total_steps}  loss {numpy.mean(losses):.5f}  {milliseconds:.0f} ms/step",
                flush=True,
            )
            last_progress, losses = now, []
        if now - last_checkpoint >= settings.checkpoint_every_s:
            save_checkpoint(folder, model, optimizer, state)
            last_checkpoint = now
    save_checkpoint(folder, model, optimizer, state)
    elapsed = time.monotonic() - started
    done = max(1, state.step - first_step)
    print(
        f"chunk done: step {state.step}/{settings.total_steps}, {elapsed:.0f} s, {1000 * elapsed / done:.0f} ms/step",
        flush=True,
    )
    model.eval()
    return state
