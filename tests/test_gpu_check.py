"""The GPU check (benchmarks/gpu_check.py): its settings and argument building, its figure file from a
--tiny run on the CPU (with mlflow hidden, as on the GPU machines), its failure handling, and the real run
behind a skip that names the missing GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"

# Installed here but not on the GPU machines: hidden from every process of the tiny run (a sitecustomize on
# PYTHONPATH), so an import of either anywhere on the measured paths fails the test.
HIDE_PACKAGES = """
import sys

HIDDEN = {"mlflow", "vllm"}


class _Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
"""


@pytest.fixture(scope="module")
def gc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def _n_params(gc: ModuleType, model: str) -> tuple[int, int]:
    """(all parameters, without the embedding) of a shape, built on the meta device (no memory)."""
    from transformers import Qwen3ForCausalLM

    with torch.device("meta"):
        lm = Qwen3ForCausalLM(gc.qwen3_config(model))
    total = sum(p.numel() for p in lm.parameters())
    return total, total - lm.model.embed_tokens.weight.numel()


def test_the_shapes_are_qwen3_0_6b_and_4b(gc: ModuleType) -> None:
    # the model cards: Qwen3-0.6B 0.6B parameters (0.44B without embeddings), Qwen3-4B 4.0B (3.6B)
    total, body = _n_params(gc, "qwen3-0.6b")
    assert (round(total / 1e9, 1), round(body / 1e9, 2)) == (0.6, 0.44)
    total, body = _n_params(gc, "qwen3-4b")
    assert (round(total / 1e9, 1), round(body / 1e9, 1)) == (4.0, 3.6)
    config = gc.qwen3_config("qwen3-4b", eos_token_id=3, pad_token_id=1)
    assert (config.vocab_size, config.tie_word_embeddings, config.eos_token_id) == (151936, True, 3)
    with pytest.raises(ValueError, match="unknown model 'qwen3-8b'"):
        gc.qwen3_config("qwen3-8b")


def test_peak_table_and_mfu(gc: ModuleType) -> None:
    assert gc.peak_key("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert gc.peak_key("NVIDIA H100 PCIe") == "H100 PCIe"
    assert gc.peak_key("NVIDIA H100 NVL") == "H100 NVL"
    assert gc.peak_key("NVIDIA H200") == "H200 SXM"
    assert gc.peak_key("NVIDIA A100-SXM4-80GB") is None
    assert gc.PEAK_BF16_DENSE_TFLOPS["H100 PCIe"] < gc.PEAK_BF16_DENSE_TFLOPS["H100 SXM"]
    tflops, share = gc.mfu(4_000_000_000, 10_000.0, 989.5)
    assert tflops == pytest.approx(240.0)
    assert share == pytest.approx(240.0 / 989.5)
    assert gc.mfu(1000, 1.0, None)[1] is None


def test_gpu_settings_and_part_commands(gc: ModuleType, tmp_path: Path) -> None:
    from distill.sft import sft_kwargs

    check = gc.GPU_CHECK
    assert [p.key for p in check.parts] == [
        "sft/qwen3-0.6b",
        "generate/qwen3-0.6b",
        "eval/qwen3-0.6b",
        "sft/qwen3-4b",
        "generate/qwen3-4b",
    ]
    assert sum(p.budget_s for p in check.parts) <= check.time_limit_s <= 8 * 60
    settings = gc.sft_settings(check, "qwen3-4b", "cuda")
    kwargs = sft_kwargs(settings, tmp_path, device="cuda")
    assert kwargs["bf16"] is True and kwargs["use_cpu"] is False
    assert kwargs["activation_checkpointing"] is True and kwargs["completion_only_loss"] is True
    assert kwargs["per_device_train_batch_size"] == check.sft_batch["qwen3-4b"]
    assert kwargs["gradient_accumulation_steps"] == 1
    assert kwargs["max_steps"] == check.sft_warmup_steps + check.sft_steps
    assert kwargs["save_strategy"] == "no"  # no 24 GB checkpoint of the 4B model at the end
    assert settings.threads is None
    tiny = gc.sft_settings(gc.TINY_CHECK, "qwen3-tiny", "cpu")
    tiny_kwargs = sft_kwargs(tiny, tmp_path, device="cpu")
    assert tiny_kwargs["bf16"] is False and tiny_kwargs["use_cpu"] is True and tiny.threads == 1

    part = check.parts[3]
    cmd = gc.child_command(
        part, budget_s=150, device="cuda", workdir=tmp_path, result=tmp_path / "r.json", tiny=False
    )
    assert cmd[:2] == [sys.executable, str(SCRIPT)]
    args = gc.parse_args(cmd[2:])
    assert (args.part, args.model, args.budget_s, args.device, args.tiny) == (
        "sft",
        "qwen3-4b",
        150.0,
        "cuda",
        False,
    )
    tiny_cmd = gc.child_command(
        gc.TINY_CHECK.parts[0],
        budget_s=9,
        device="cpu",
        workdir=tmp_path,
        result=tmp_path / "r.json",
        tiny=True,
    )
    assert gc.parse_args(tiny_cmd[2:]).tiny is True
    defaults = gc.parse_args([])
    assert (defaults.out, defaults.device, defaults.part) == (gc.DEFAULT_OUT, "auto", None)


def test_failures_are_recorded_and_the_check_goes_on(gc: ModuleType, tmp_path: Path) -> None:
    bad = gc.Part("sft", "qwen3-70b", 60)
    result = gc.run_part(bad, budget_s=60, device="cpu", workdir=tmp_path, tiny=True)
    assert result["status"] == "error" and "unknown model 'qwen3-70b'" in result["error"]
    slow = gc.Part("sft", "qwen3-tiny", 60)
    result = gc.run_part(slow, budget_s=0.5, device="cpu", workdir=tmp_path, tiny=True)
    assert result["status"] == "timeout" and "budget of 0.5 s" in result["error"]
    # no time left: every part is skipped, and the figure file is still written
    out = tmp_path / "figures.json"
    record = gc.run_check(tiny=True, device="cpu", out=out, workdir=tmp_path, time_limit_s=5)
    on_disk = json.loads(out.read_text())
    assert on_disk == record
    assert {k: r["status"] for k, r in on_disk["parts"].items()} == dict.fromkeys(
        ("sft/qwen3-tiny", "generate/qwen3-tiny", "eval/qwen3-tiny"), "skipped"
    )


def _run(args: list[str], tmp_path: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_PACKAGES)
    src = [str(p) for p in sorted((REPO / "packages").glob("*/src"))]
    path = os.pathsep.join([str(hide), *src, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_tiny_check_writes_the_figure_file(gc: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "out" / "gpu_check.json"
    proc = _run(["--tiny", "--device", "cpu", "--out", str(out)], tmp_path, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(out.read_text())
    env = record["environment"]
    assert record["mode"] == "tiny" and env["device"] == "cpu" and env["gpu"] is None
    assert all(env["versions"][d] for d in ("torch", "transformers", "trl"))
    check = gc.TINY_CHECK
    parts: dict[str, dict[str, Any]] = record["parts"]
    assert list(parts) == [p.key for p in check.parts]
    assert {k: r["status"] for k, r in parts.items()} == dict.fromkeys(parts, "ok"), parts

    sft = parts["sft/qwen3-tiny"]
    assert sft["n_params"] == _n_params(gc, "qwen3-tiny")[0]  # the trained model has the configured shape
    assert sft["steps"] == check.sft_warmup_steps + check.sft_steps
    assert sft["measured_steps"] == check.sft_steps
    assert sft["steps_per_s"] > 0 and sft["tokens_per_s"] > 0
    assert sft["tokens_per_step"] <= check.sft_batch["qwen3-tiny"] * 512  # non-padding, within max_length
    assert sft["mfu"] is None and sft["bf16"] is False and sft["gradient_checkpointing"] is True

    gen = parts["generate/qwen3-tiny"]
    assert gen["batch"] == check.gen_batch
    assert 0 < gen["new_tokens"] <= check.gen_batch * check.gen_new_tokens
    assert gen["tokens_per_s"] > 0

    ev = parts["eval/qwen3-tiny"]
    assert ev["problems"] == check.eval_problems == sum(ev["verdicts"].values())
    assert ev["problems_per_s"] > 0
    assert "figures in" in proc.stdout


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (an H100 or H200): the full GPU check, bf16 SFT of the Qwen3-0.6B/4B shapes",
)
def test_gpu_check_on_the_gpu(gc: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = _run(["--out", str(out)], tmp_path, timeout=600)
    record = json.loads(out.read_text())
    parts = record["parts"]
    assert {k: r["status"] for k, r in parts.items()} == dict.fromkeys(parts, "ok"), proc.stdout + proc.stderr
    assert record["environment"]["gpu"] and record["environment"]["driver"]
    for key in ("sft/qwen3-0.6b", "sft/qwen3-4b"):
        assert parts[key]["bf16"] is True and parts[key]["dtype"] == "bfloat16"
        if record["environment"]["peak_bf16_dense_tflops"]:
            assert 0 < parts[key]["mfu"] < 1
    assert parts["eval/qwen3-0.6b"]["problems"] == gc.GPU_CHECK.eval_problems
    assert proc.returncode == 0
