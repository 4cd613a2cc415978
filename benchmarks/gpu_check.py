"""GPU check: training, generation and evaluation throughput on one GPU, written to one JSON of figures.

Made for the GPU machines this project is lent now and then (one H100 or H200, no network, a Python with
torch, transformers, accelerate and peft; the rest travels as wheels: ``benchmarks/gpu_wheels.txt``,
README "GPU check"). In under 8 minutes it measures, on randomly initialised models with the real shapes
of Qwen3-0.6B and Qwen3-4B (``Qwen3Config`` only, nothing downloaded):

1. ``sft/<model>``: bf16 SFT through ``distill.sft.build_trainer`` (TRL's ``SFTTrainer`` exactly as
   ``train_sft`` configures it: the paper preset, completion-only loss, gradient checkpointing) on world
   problems (``skillworld``) formatted skill-aware by ``distill.formatting``. Steps/s and non-padding
   tokens/s over the steps after the warmup steps, and MFU = 6 * N * tokens/s / the GPU's peak dense bf16
   FLOP/s (N: every parameter once, the tied embedding counted as the LM head; attention's quadratic
   term and the recomputation of gradient checkpointing are not counted, so this is model FLOPs, not
   hardware FLOPs).
2. ``generate/<model>``: the ``hf`` engine's new tokens/s on a batch of world prompts, a fixed number of
   new tokens, temperature 0.6 (after one short warmup call).
3. ``eval/<model>``: ``distill.eval.evaluate`` (the shared rollout and the judge) on one world suite with
   the ``hf`` engine: problems/s.

Each part runs in its own process with its own time budget; one that fails (an out-of-memory error, a
missing package) or runs over is recorded with its error and the check goes on, and the JSON is rewritten
after every part, so one run always yields the file. ``--tiny`` runs the same parts, through the same
code, on a tiny Qwen3 (CPU allowed): that is what the tests run.

    python3 benchmarks/gpu_check.py                       # GPU; figures in runs/gpu-check/gpu_check.json
    python3 benchmarks/gpu_check.py --tiny --device cpu   # the same code paths on a CPU, in about a minute
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
DEFAULT_OUT = REPO / "runs" / "gpu-check" / "gpu_check.json"
READY = "READY"  # written last into a model folder: a folder without it is rebuilt

# The real shapes of Qwen3-0.6B and Qwen3-4B (their config.json); both tie the embedding and the LM head.
QWEN3_VOCAB = 151936
QWEN3_SHAPES: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": {
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": QWEN3_VOCAB,
        "tie_word_embeddings": True,
        "max_position_embeddings": 40960,
    },
    "qwen3-4b": {
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": QWEN3_VOCAB,
        "tie_word_embeddings": True,
        "max_position_embeddings": 40960,
    },
    # --tiny: small enough for a CPU; its vocabulary is larger than the world tokenizer's, as the real
    # shapes' is, so generated ids the tokenizer does not know are decoded here too.
    "qwen3-tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 4096,
        "tie_word_embeddings": True,
        "max_position_embeddings": 2048,
    },
}

# Peak dense bf16 Tensor Core FLOP/s (TFLOP/s): half the with-sparsity figure of NVIDIA's datasheets.
# The H200 has the H100's compute (more and faster memory). Matched on torch's device name, e.g.
# "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200".
PEAK_BF16_DENSE_TFLOPS: dict[str, float] = {
    "H100 SXM": 989.5,
    "H100 PCIe": 756.5,
    "H100 NVL": 835.5,
    "H200 SXM": 989.5,
    "H200 NVL": 835.5,
}


def peak_key(gpu_name: str) -> str | None:
    """The ``PEAK_BF16_DENSE_TFLOPS`` entry for a device name (None: not a GPU in the table)."""
    name = gpu_name.upper()
    for gen in ("H200", "H100"):
        if gen in name:
            if "NVL" in name:
                return f"{gen} NVL"
            if "PCIE" in name:
                return f"{gen} PCIe"
            return f"{gen} SXM"
    return None


def mfu(n_params: int, tokens_per_s: float, peak_tflops: float | None) -> tuple[float, float | None]:
    """Model TFLOP/s (6 * N * tokens/s) and its share of the peak (None without a peak)."""
    tflops = 6.0 * n_params * tokens_per_s / 1e12
    return tflops, (tflops / peak_tflops if peak_tflops else None)


@dataclass(frozen=True)
class Part:
    kind: str  # sft | generate | eval
    model: str
    budget_s: float

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.model}"


@dataclass(frozen=True)
class CheckSettings:
    """The sizes of one check (the GPU check or --tiny)."""

    parts: tuple[Part, ...]
    time_limit_s: float
    sft_batch: dict[str, int]
    sft_warmup_steps: int
    sft_steps: int
    gen_batch: int
    gen_new_tokens: int
    eval_suite: str
    eval_problems: int
    eval_new_tokens: int
    eval_batch: int
    sft_preset: str = "paper"


# Budgets: the small model first (its figures come early), then the large one; 420 s of parts, 450 s in all.
GPU_CHECK = CheckSettings(
    parts=(
        Part("sft", "qwen3-0.6b", 90),
        Part("generate", "qwen3-0.6b", 50),
        Part("eval", "qwen3-0.6b", 60),
        Part("sft", "qwen3-4b", 150),
        Part("generate", "qwen3-4b", 70),
    ),
    time_limit_s=450,
    sft_batch={"qwen3-0.6b": 64, "qwen3-4b": 32},
    sft_warmup_steps=3,
    sft_steps=10,
    gen_batch=64,
    gen_new_tokens=256,
    eval_suite="amc23",
    eval_problems=48,
    eval_new_tokens=512,
    eval_batch=64,
)
TINY_CHECK = CheckSettings(
    parts=(
        Part("sft", "qwen3-tiny", 120),
        Part("generate", "qwen3-tiny", 90),
        Part("eval", "qwen3-tiny", 90),
    ),
    time_limit_s=300,
    sft_batch={"qwen3-tiny": 4},
    sft_warmup_steps=1,
    sft_steps=3,
    gen_batch=4,
    gen_new_tokens=16,
    eval_suite="amc23",
    eval_problems=6,
    eval_new_tokens=16,
    eval_batch=8,
)
MIN_PART_S = 20.0  # a part is skipped when less than this is left of the time limit


def check_settings(tiny: bool) -> CheckSettings:
    return TINY_CHECK if tiny else GPU_CHECK


# ------------------------------------------------------------------------------------------ imports
def ensure_sources() -> list[str]:
    """Make the project's packages importable from a bare checkout (the GPU machine installs none of them):
    ``packages/*/src`` go on ``sys.path`` and on ``PYTHONPATH`` (for the part processes and the judge's
    workers) when ``distill`` is not importable already. Returns the folders added."""
    if importlib.util.find_spec("distill") is not None:
        return []
    added = [str(p) for p in sorted((REPO / "packages").glob("*/src"))]
    sys.path[:0] = added
    os.environ["PYTHONPATH"] = os.pathsep.join([*added, *filter(None, [os.environ.get("PYTHONPATH")])])
    return added


def qwen3_config(model: str, **ids: Any) -> Any:
    """The ``Qwen3Config`` of one of ``QWEN3_SHAPES`` (``ids``: eos/pad token ids)."""
    from transformers import Qwen3Config

    if model not in QWEN3_SHAPES:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(QWEN3_SHAPES)}")
    return Qwen3Config(**QWEN3_SHAPES[model], bos_token_id=None, **ids)


# ------------------------------------------------------------------------------------------ environment
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.splitlines()
        name, driver, memory = (s.strip() for s in query[0].split(","))
        out.update(gpu=name, gpu_count=len(query), driver=driver, gpu_memory_mib=int(float(memory)))
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        found = re.search(r"CUDA Version:\s*([\d.]+)", header)
        if found:
            out["driver_cuda"] = found.group(1)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        pass
    return out


def environment(device: str) -> dict[str, Any]:
    """Versions, the GPU (name, driver, the driver's CUDA, torch's CUDA) and its peak bf16 FLOP/s."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "torch_cuda": torch.version.cuda,
        "versions": {
            d: _version(d)
            for d in ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "math-verify")
        },
        "gpu": None,
    }
    if device == "cuda":
        env.update(_nvidia_smi())
        if env["gpu"] is None:
            env["gpu"] = torch.cuda.get_device_name(0)
    key = peak_key(env["gpu"]) if env["gpu"] else None
    env["peak_key"] = key
    env["peak_bf16_dense_tflops"] = PEAK_BF16_DENSE_TFLOPS.get(key) if key else None
    return env


# ------------------------------------------------------------------------------------------ the parts
@dataclass
class Context:
    check: CheckSettings
    model: str
    device: str
    workdir: Path
    deadline: float  # time.monotonic() past which SFT stops taking steps


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _peak_memory_gib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def world_tokenizer(workdir: Path) -> Any:
    """The world's BPE tokenizer with Qwen3's chat template and special tokens (built once per workdir)."""
    from transformers import AutoTokenizer

    folder = workdir / "tokenizer"
    if (folder / READY).exists():
        return AutoTokenizer.from_pretrained(folder)
    from skillworld.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(n_texts=2000)
    tokenizer.save_pretrained(folder)
    (folder / READY).touch()
    return tokenizer


def ensure_model(ctx: Context) -> Path:
    """A randomly initialised model of ``ctx.model``'s shape, saved with the world tokenizer (bf16 on a
    GPU), built once per workdir."""
    out = ctx.workdir / "models" / ctx.model
    if (out / READY).exists():
        return out
    import torch
    from skillworld.tokenizer import ENDOFTEXT, IM_END
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = world_tokenizer(ctx.workdir)
    eos, pad = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = qwen3_config(ctx.model, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if ctx.device == "cuda" else torch.float32
    with torch.device(ctx.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(  # Qwen3's own sampling defaults
        eos_token_id=eos, pad_token_id=pad, do_sample=True, temperature=0.6, top_p=0.95, top_k=20
    )
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / READY).touch()
    del model
    if ctx.device == "cuda":
        torch.cuda.empty_cache()
    return out


def sft_settings(check: CheckSettings, model: str, device: str) -> Any:
    """The SFT settings of the check: the paper preset (bf16, gradient checkpointing) at the check's batch,
    one micro-batch a step, length-grouped batches, a fixed number of steps, no checkpoint saved."""
    from distill.sft import load_sft_settings

    return load_sft_settings(
        check.sft_preset,
        per_device_train_batch_size=check.sft_batch[model],
        gradient_accumulation_steps=1,
        max_steps=check.sft_warmup_steps + check.sft_steps,
        warmup_steps=1,
        group_by_length=True,
        logging_steps=1000,
        device=device,
        threads=1 if device == "cpu" else None,
        extra={"save_strategy": "no"},
    )


def step_clock(warmup_steps: int, deadline: float, device: str) -> Any:
    """A ``TrainerCallback`` that notes the time and the tokens seen at the end of every step, and stops
    training once ``deadline`` has passed (after at least two measured steps). The figures cover the steps
    after the first ``warmup_steps`` (at least one: its end starts the clock)."""
    from transformers import TrainerCallback

    warmup = max(1, warmup_steps)

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            _sync(device)
            self.times.append(time.perf_counter())
            self.tokens.append(int(state.num_input_tokens_seen or 0))
            if time.monotonic() > deadline and len(self.times) >= warmup + 2:
                control.should_training_stop = True

        def figures(self) -> dict[str, Any]:
            if len(self.times) < warmup + 1:
                raise RuntimeError(f"only {len(self.times)} steps ran: no step after the warmup to measure")
            seconds = self.times[-1] - self.times[warmup - 1]
            steps = len(self.times) - warmup
            tokens = self.tokens[-1] - self.tokens[warmup - 1]
            return {
                "measured_steps": steps,
                "measured_s": round(seconds, 3),
                "steps_per_s": round(steps / seconds, 4),
                "tokens_per_s": round(tokens / seconds, 1),
                "tokens_per_step": round(tokens / steps, 1),
            }

    return StepClock()


def part_sft(ctx: Context) -> dict[str, Any]:
    from distill.formatting import FormatConfig, format_examples
    from distill.sft import build_trainer
    from skillworld import generate_pool
    from transformers import AutoTokenizer

    start = time.perf_counter()
    check = ctx.check
    model_dir = ensure_model(ctx)
    settings = sft_settings(check, ctx.model, ctx.device)
    n_examples = settings.per_device_train_batch_size * settings.max_steps
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows, _ = format_examples(generate_pool(n_examples, seed=1), FormatConfig(skill_aware=True), tokenizer)
    clock = step_clock(check.sft_warmup_steps, ctx.deadline, ctx.device)
    ckpt = ctx.workdir / "sft" / ctx.model
    shutil.rmtree(ckpt, ignore_errors=True)
    trainer, _ = build_trainer(
        model_dir, rows, settings, ckpt, device=ctx.device, progress=False, callbacks=[clock]
    )
    prepare_s = time.perf_counter() - start
    output = trainer.train()
    lm = trainer.model
    return {
        "n_params": int(sum(p.numel() for p in lm.parameters())),
        "batch": settings.per_device_train_batch_size,
        "warmup_steps": check.sft_warmup_steps,
        "steps": int(trainer.state.global_step),
        **clock.figures(),
        "train_loss": round(float(output.training_loss), 4),
        "bf16": bool(trainer.args.bf16),
        "dtype": str(next(lm.parameters()).dtype).removeprefix("torch."),
        "gradient_checkpointing": bool(settings.gradient_checkpointing),
        "attn_implementation": getattr(lm.config, "_attn_implementation", None),
        "prepare_s": round(prepare_s, 2),
        "peak_memory_gib": _peak_memory_gib(ctx.device),
    }


def _world_prompts(n: int) -> list[Any]:
    from distill.engines import question_prompts
    from skillworld import generate_pool

    return question_prompts([p.question for p in generate_pool(n, seed=2)])


def part_generate(ctx: Context) -> dict[str, Any]:
    from distill.engines import SamplingConfig, make_engine

    check = ctx.check
    model_dir = ensure_model(ctx)
    prompts = _world_prompts(check.gen_batch)
    params = SamplingConfig(temperature=0.6, top_p=0.95, max_new_tokens=check.gen_new_tokens, seed=0)
    with make_engine("hf", str(model_dir), device=ctx.device, batch_size=check.gen_batch) as engine:
        engine.generate(prompts, params.model_copy(update={"max_new_tokens": 8}), progress=False)  # warmup
        _sync(ctx.device)
        start = time.perf_counter()
        generations = engine.generate(prompts, params, progress=False)
        _sync(ctx.device)
        seconds = time.perf_counter() - start
    flat = [g for gens in generations for g in gens]
    new_tokens = sum(g.n_tokens for g in flat)
    return {
        "batch": len(prompts),
        "max_new_tokens": check.gen_new_tokens,
        "new_tokens": new_tokens,
        "rows_at_max_new_tokens": sum(g.finish_reason == "length" for g in flat),
        "generate_s": round(seconds, 3),
        "tokens_per_s": round(new_tokens / seconds, 1),
        "peak_memory_gib": _peak_memory_gib(ctx.device),
    }


def part_eval(ctx: Context) -> dict[str, Any]:
    from distill.engines import SamplingConfig, make_engine
    from distill.eval import EvalConfig, evaluate
    from skillworld import SUITES, generate_benchmarks

    check = ctx.check
    model_dir = ensure_model(ctx)
    suite = check.eval_suite
    benchmarks = generate_benchmarks(0, check.eval_problems, suites={suite: SUITES[suite]})
    config = EvalConfig(
        samples_per_problem=1,
        sampling=SamplingConfig(temperature=0.6, top_p=0.95, max_new_tokens=check.eval_new_tokens),
    )
    out = ctx.workdir / "eval" / ctx.model
    shutil.rmtree(out, ignore_errors=True)  # saved answers would be reused, not measured
    with make_engine("hf", str(model_dir), device=ctx.device, batch_size=check.eval_batch) as engine:
        engine.generate(_world_prompts(2), SamplingConfig(max_new_tokens=8), progress=False)  # warmup
        start = time.perf_counter()
        report = evaluate(engine, benchmarks, config, out_dir=out, progress=False)
        seconds = time.perf_counter() - start
    run = report.benchmarks[suite]
    tokens = sum(a.n_tokens or 0 for a in run.rollout.attempts)
    return {
        "suite": suite,
        "problems": run.score.n_problems,
        "max_new_tokens": check.eval_new_tokens,
        "eval_s": round(seconds, 3),
        "problems_per_s": round(run.score.n_problems / seconds, 3),
        "answer_tokens_per_s": round(tokens / seconds, 1),
        "accuracy": round(run.score.avg_at_k.value, 4),
        "verdicts": dict(run.score.status_counts),
        "peak_memory_gib": _peak_memory_gib(ctx.device),
    }


PARTS = {"sft": part_sft, "generate": part_generate, "eval": part_eval}


def run_child(args: argparse.Namespace) -> int:
    """One part in this process: its figures (or its error) to ``args.result``."""
    start = time.monotonic()
    result: dict[str, Any]
    try:
        if args.part not in PARTS:
            raise ValueError(f"unknown part {args.part!r}: choose one of {', '.join(PARTS)}")
        if args.model not in QWEN3_SHAPES:
            raise ValueError(f"unknown model {args.model!r}: choose one of {', '.join(QWEN3_SHAPES)}")
        ensure_sources()
        ctx = Context(
            check=check_settings(args.tiny),
            model=args.model,
            device=args.device,
            workdir=Path(args.workdir),
            deadline=start + 0.8 * args.budget_s,
        )
        if args.device == "cuda":
            import torch

            result = {"status": "ok", "device_name": torch.cuda.get_device_name(0), **PARTS[args.part](ctx)}
        else:
            result = {"status": "ok", **PARTS[args.part](ctx)}
    except Exception as exc:  # recorded in the figure file; the parent goes on with the next part
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    result["seconds"] = round(time.monotonic() - start, 2)
    Path(args.result).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["status"] == "ok" else 1


# ------------------------------------------------------------------------------------------ the parent
def child_command(
    part: Part, *, budget_s: float, device: str, workdir: Path, result: Path, tiny: bool
) -> list[str]:
    cmd = [sys.executable, str(SCRIPT), "--part", part.kind, "--model", part.model]
    cmd += ["--budget-s", f"{budget_s:.1f}", "--device", device, "--workdir", str(workdir)]
    cmd += ["--result", str(result)]
    return [*cmd, "--tiny"] if tiny else cmd


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


def run_part(part: Part, *, budget_s: float, device: str, workdir: Path, tiny: bool) -> dict[str, Any]:
    """Run one part in a child process (its own session, killed with its children past ``budget_s``)."""
    name = part.key.replace("/", "_")
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    result_path, log_path = workdir / "logs" / f"{name}.json", workdir / "logs" / f"{name}.log"
    result_path.unlink(missing_ok=True)
    cmd = child_command(
        part, budget_s=budget_s, device=device, workdir=workdir, result=result_path, tiny=tiny
    )
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = round(time.monotonic() - start, 2)
    if rc is None:
        return {
            "status": "timeout",
            "error": f"over its budget of {budget_s:g} s",
            "seconds": seconds,
            "log_tail": _tail(log_path),
        }
    try:
        result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = {"status": "error", "error": f"the part process exited with {rc} and wrote no figures"}
    result["budget_s"] = round(budget_s, 1)
    result["wall_s"] = seconds
    if result.get("status") != "ok":
        result["log_tail"] = _tail(log_path)
    return result


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tmp.replace(path)


def _summary(key: str, r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"{key}: {r.get('status')} ({r.get('error')})"
    if key.startswith("sft/"):
        mfu_text = f", MFU {r['mfu']:.1%}" if r.get("mfu") is not None else ""
        return f"{key}: {r['steps_per_s']} steps/s, {r['tokens_per_s']:.0f} tokens/s{mfu_text}"
    if key.startswith("generate/"):
        return f"{key}: {r['tokens_per_s']:.0f} new tokens/s"
    return f"{key}: {r['problems_per_s']} problems/s"


def run_check(
    *,
    tiny: bool,
    device: str,
    out: Path,
    workdir: Path,
    time_limit_s: float,
    peak_tflops: float | None = None,
) -> dict[str, Any]:
    """Every part of the check in turn, within ``time_limit_s``; the figure file is rewritten after each."""
    check = check_settings(tiny)
    start, started = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    env = environment(device)
    if peak_tflops is not None:
        env.update(peak_key="--peak-tflops", peak_bf16_dense_tflops=peak_tflops)
    record: dict[str, Any] = {
        "check": "skilldistill gpu_check",
        "mode": "tiny" if tiny else "gpu",
        "started": started,
        "time_limit_s": time_limit_s,
        "environment": env,
        "peak_bf16_dense_tflops_table": PEAK_BF16_DENSE_TFLOPS,
        "mfu_definition": "6 * n_params * non-padding tokens/s / peak dense bf16 FLOP/s",
        "settings": {**asdict(check), "parts": [asdict(p) for p in check.parts]},  # a list, as in JSON
        "parts": {},
    }
    _write_json(out, record)
    for part in check.parts:
        left = time_limit_s - (time.monotonic() - start)
        if left < MIN_PART_S:
            result: dict[str, Any] = {"status": "skipped", "error": f"{left:.0f} s left of the time limit"}
        else:
            result = run_part(
                part, budget_s=min(part.budget_s, left), device=device, workdir=workdir, tiny=tiny
            )
        if part.kind == "sft" and result.get("status") == "ok":
            tflops, share = mfu(result["n_params"], result["tokens_per_s"], env["peak_bf16_dense_tflops"])
            result["model_tflops_per_s"] = round(tflops, 2)
            result["mfu"] = round(share, 4) if share is not None else None
        record["parts"][part.key] = result
        record["seconds"] = round(time.monotonic() - start, 1)
        _write_json(out, record)
        print(f"[gpu-check] {_summary(part.key, result)}", flush=True)
    return record


def resolve_device(requested: str, tiny: bool) -> str:
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no CUDA GPU")
    if requested == "cpu" and not tiny:
        raise SystemExit("gpu_check: no CUDA GPU here; the full check needs one (--tiny runs on a CPU)")
    return requested


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--tiny", action="store_true", help="a tiny Qwen3, the same code paths (CPU allowed)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the figure file (default {DEFAULT_OUT})")
    p.add_argument("--workdir", type=Path, help="models and logs (default: a temporary folder, removed)")
    p.add_argument("--time-limit", type=float, help="seconds for all parts (default 450; --tiny 300)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, if not in the table")
    # one part in this process (what the parent runs in each child)
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--budget-s", type=float, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.part:
        return run_child(args)
    ensure_sources()
    device = resolve_device(args.device, args.tiny)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    time_limit = args.time_limit or check_settings(args.tiny).time_limit_s
    try:
        record = run_check(
            tiny=args.tiny,
            device=device,
            out=args.out,
            workdir=workdir,
            time_limit_s=time_limit,
            peak_tflops=args.peak_tflops,
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"[gpu-check] figures in {args.out} ({record['seconds']} s)")
    return 0 if all(r.get("status") == "ok" for r in record["parts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
