"""SFT through TRL: presets, argument building, a killed training resuming from its checkpoint, LoRA,
and training metrics in a real MLflow store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from distill.formatting import FormatConfig, format_examples
from distill.sft import SFTSettings, load_sft_settings, preset_names, sft_config, sft_kwargs, train_sft
from safetensors.torch import load_file

FAST = {
    "num_train_epochs": 1,
    "save_steps": 2,
    "logging_steps": 1,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
}


@pytest.fixture(scope="module")
def examples(world_pool_small, tiny_student_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_student_dir)
    rows, _ = format_examples(world_pool_small[:48], FormatConfig(skill_aware=True), tokenizer)
    return rows


def test_presets_build_the_papers_recipe(tmp_path: Path) -> None:
    assert {"paper", "cpu-demo"} <= set(preset_names())
    paper = load_sft_settings("paper")
    assert (paper.learning_rate, paper.lr_scheduler_type, paper.warmup_ratio) == (1e-5, "cosine", 0.1)
    assert (paper.num_train_epochs, paper.global_batch_size, paper.max_length) == (5, 8, 8192)
    gpu = sft_kwargs(paper, tmp_path, device="cuda", progress=False)
    assert gpu["bf16"] and gpu["activation_checkpointing"] and gpu["completion_only_loss"]
    assert "assistant_only_loss" not in gpu  # the rows say what trains, not the chat template
    assert not gpu["use_cpu"] and gpu["gradient_accumulation_steps"] == 8
    on_cpu = sft_config(paper, tmp_path, device="cpu", progress=False)  # the real SFTConfig
    assert on_cpu.use_cpu and not on_cpu.bf16  # bf16 is for GPUs only
    assert on_cpu.learning_rate == 1e-5 and on_cpu.max_length == 8192 and on_cpu.report_to == []
    assert on_cpu.completion_only_loss and not on_cpu.assistant_only_loss
    assert on_cpu.lr_scheduler_type == "cosine"
    own = tmp_path / "mine.yaml"
    own.write_text("learning_rate: 2.0e-4\nnum_train_epochs: 2\nlora: {r: 8}\n")
    mine = load_sft_settings(own, seed=3)
    assert mine.learning_rate == 2e-4 and mine.lora is not None and mine.lora.r == 8 and mine.seed == 3
    with pytest.raises(ValueError, match="unknown SFT preset 'papr'"):
        load_sft_settings("papr")
    own.write_text("learning_rat: 1.0\n")
    with pytest.raises(ValueError, match="learning_rat"):
        load_sft_settings(own)


KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    from transformers import TrainerCallback
    from distill.sft import SFTSettings, train_sft

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as when a job is killed

    model, rows_file, settings_json, out = sys.argv[1:5]
    kill_at = int(sys.argv[5]) if len(sys.argv) > 5 else 0  # default: at the first checkpoint
    rows = [json.loads(line) for line in open(rows_file)]
    train_sft(model, rows, SFTSettings.model_validate_json(settings_json), out_dir=out, progress=False,
              callbacks=[KillAfterCheckpoint()])
    """
)


def test_killed_training_resumes_from_its_checkpoint(
    tiny_student_dir: Path, examples, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from skillcore import write_jsonl

    settings = load_sft_settings("cpu-demo", **FAST)  # 48 examples / 8 = 6 steps, a checkpoint every 2
    rows_file = tmp_path / "rows.jsonl"
    write_jsonl(rows_file, examples)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tiny_student_dir),
            str(rows_file),
            settings.model_dump_json(),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "model").exists()

    resumed = train_sft(tiny_student_dir, examples, settings, out_dir=out, progress=False)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.steps == 6 and (out / "model" / "config.json").is_file()
    assert not (out / "checkpoints").exists()  # resume points go once the model is saved

    straight = train_sft(tiny_student_dir, examples, settings, out_dir=tmp_path / "straight", progress=False)
    assert straight.steps == 6 and straight.resumed_from is None
    a = load_file(out / "model" / "model.safetensors")
    b = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    base = load_file(tiny_student_dir / "model.safetensors")
    assert a.keys() == b.keys()
    # the resumed run continues the same optimizer state, schedule and data order: the same weights
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(not torch.equal(a[k], base[k]) for k in a)

    again = train_sft(tiny_student_dir, examples, settings, out_dir=out, progress=False)
    assert again.skipped and again.steps == 6  # a finished folder is not trained again


def test_a_checkpoint_cut_short_is_skipped_and_the_loss_describes_the_whole_run(
    tiny_student_dir: Path, examples, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """A save cut short (disk full: only the config files of checkpoint-4 written) must not block the
    resume: it is skipped, said so, and training resumes from checkpoint-2 to the same weights; the
    reported loss is the whole run's, not the mean of the steps after the resume."""
    import logging

    from skillcore import write_jsonl

    settings = load_sft_settings("cpu-demo", **FAST)  # 6 steps, a checkpoint every 2
    rows_file = tmp_path / "rows.jsonl"
    write_jsonl(rows_file, examples)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    out = tmp_path / "killed"
    args = [str(tiny_student_dir), str(rows_file), settings.model_dump_json(), str(out), "4"]
    proc = subprocess.run([sys.executable, str(script), *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    cut = out / "checkpoints" / "checkpoint-4"
    assert (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    for item in cut.iterdir():  # what the disk-full save left: the config files only
        if item.name not in ("config.json", "generation_config.json"):
            item.unlink() if item.is_file() else shutil.rmtree(item)

    with caplog.at_level(logging.INFO, logger="distill.sft"):
        resumed = train_sft(tiny_student_dir, examples, settings, out_dir=out, progress=False)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert f"skipping the incomplete checkpoint {cut} (missing model weights" in caplog.text
    assert f"resuming fine-tuning from {out / 'checkpoints' / 'checkpoint-2'}" in caplog.text
    straight = train_sft(tiny_student_dir, examples, settings, out_dir=tmp_path / "straight", progress=False)
    assert resumed.steps == straight.steps == 6
    a = load_file(out / "model" / "model.safetensors")
    b = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the whole run's mean loss (steps 1-2 from the checkpoint's log, 3-6 trained after the resume)
    assert resumed.train_loss == pytest.approx(straight.train_loss, rel=1e-3)


def test_lora_merges_into_a_plain_checkpoint_and_logs_to_mlflow(
    tiny_student_dir: Path, examples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import mlflow
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, Qwen3ForCausalLM

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("sft-test")
    settings = SFTSettings.model_validate(
        {**FAST, "learning_rate": 1e-3, "max_length": 512, "lora": {"r": 4, "alpha": 8}, "save_steps": 100}
    )
    with mlflow.start_run() as run:
        result = train_sft(tiny_student_dir, examples, settings, out_dir=tmp_path / "lora", progress=False)
    mlflow.set_tracking_uri(None)
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert isinstance(model, Qwen3ForCausalLM)  # merged: no adapter files needed to load it
    assert not (Path(result.model_dir) / "adapter_config.json").exists()
    trained = load_file(Path(result.model_dir) / "model.safetensors")
    base = load_file(tiny_student_dir / "model.safetensors")
    changed = [k for k in base if not torch.equal(trained[k], base[k])]
    assert changed and all("proj" in k for k in changed)  # LoRA touches the linear layers only
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, result.steps + 1))
    assert result.tokens_seen > 0 and result.steps == 6
