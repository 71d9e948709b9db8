"""The results of `bench --perf` as read: ratios and cache speed-ups derived from the measured times, and the table
printed at the end of a run (perf.py measures them)."""

from __future__ import annotations

from .perf_steps import STAGES

RUN_STEPS = 200  # EraseConfig.steps default: the run length of the cached-vs-uncached projection


def derive_ratios(results: dict, run_steps: int) -> None:
    """Ratios and cache speed-ups from the measured times (the run projection uses the measured build time)."""

    def ratio(a, b):
        return results[a] / results[b] if a in results and b in results and results[b] > 0 else None

    results["ratio_zerase_vs_plain_lora"] = ratio("zerase_step_s", "plain_lora_step_s")
    results["ratio_gate_text_vs_all_zerase"] = ratio("zerase_step_s", "zerase_gate_all_step_s")
    results["ratio_gate_text_vs_all_esd"] = ratio("esd_step_s", "naive_esd_step_s")
    results["ratio_gate_text_vs_all_plain"] = ratio("plain_lora_gate_text_step_s", "plain_lora_step_s")
    results["speedup_cached_per_step"] = ratio("zerase_uncached_step_s", "zerase_step_s")
    if "zerase_uncached_step_s" in results and "zerase_step_s" in results:
        cached_run = results["cache_build_s"] + run_steps * results["zerase_step_s"]
        results["run_steps_projected"] = run_steps
        results["speedup_cached_run"] = run_steps * results["zerase_uncached_step_s"] / cached_run
        if "pool_sampling_s" in results:
            results["teacher_cache_build_s"] = results["cache_build_s"] - results["pool_sampling_s"]


def format_table(results: dict) -> str:
    lines = [
        f"ZErase perf — {results['device']}, torch {results['torch']}, {results['threads']} threads",
        f"model: {results['preset']} ({results['weights']} weights), {results['parameters'] / 1e6:.1f}M params, "
        f"dim {results['dit']['dim']}, {results['dit']['n_layers']} layers, {results['dtype']}, "
        f"checkpointing {'on' if results['checkpointing'] else 'off'}",
        f"problem: {results['image_size']}² px, batch {results['batch']}, rank {results['rank']}, pool "
        f"{results['pool_prompts']}×{results['sample_steps']} (cfg {results['sample_cfg']}); "
        f"median of {results['steps_timed']} after {results['warmup']} warm-up rounds",
        "",
    ]
    header = f"{'variant':<22}{'step s':>9}" + "".join(f"{stage[:9]:>10}" for stage in STAGES) + f"{'peak GB':>9}"
    lines += [header, "-" * len(header)]
    for name, per in results["stages_s"].items():
        key = "teacher_forward_s" if name == "teacher_forward" else f"{name}_step_s"
        peak = results.get("step_peak_cuda_gb", results["step_peak_rss_gb"])[name]
        lines.append(
            f"{name:<22}{results[key]:>9.4f}" + "".join(f"{per[stage]:>10.4f}" for stage in STAGES) + f"{peak:>9.2f}"
        )
    lines.append("")
    for key, label in (
        ("cache_build_s", "pool + teacher cache build (init) s"),
        ("pool_sampling_s", "pool sampling only s"),
        ("ratio_zerase_vs_plain_lora", "zerase / plain_lora"),
        ("ratio_gate_text_vs_all_zerase", "gate text / all (zerase step)"),
        ("ratio_gate_text_vs_all_esd", "gate text / all (esd vs naive-esd)"),
        ("ratio_gate_text_vs_all_plain", "gate text / all (plain step)"),
        ("speedup_cached_per_step", "cached speed-up per step"),
        ("speedup_cached_run", "cached speed-up, 200-step run incl. build"),
        ("peak_rss_gb", "peak RSS GB (whole run)"),
        ("peak_cuda_gb", "peak CUDA GB (whole run)"),
    ):
        if results.get(key) is not None:
            lines.append(f"{label:<44}{results[key]:>10.3f}")
    model = results.get("memory_model")
    if model:
        measured = results.get("step_peak_cuda_gb" if "step_peak_cuda_gb" in results else "step_peak_rss_gb", {})
        lines.append(
            f"{'memory model: zerase step peak GB':<44}{model['step_peak_gb']:>10.3f}"
            + (f"   measured {measured['zerase']:.3f}" if "zerase" in measured else "")
        )
    return "\n".join(lines)
