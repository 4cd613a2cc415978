"""Two-process CPU training through the real launcher: ``torchrun --nproc_per_node 2`` starts two ranks over
gloo, TRL trains across them, one MLflow run is logged and one checkpoint is saved, shaped like a
one-process run's. (``accelerate launch --cpu --num_processes 2`` starts a single process with the pinned
accelerate 1.15, see the design guide, so torchrun is the CPU launcher; GPUs use accelerate's configs in
``infra/accelerate/``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from safetensors.torch import load_file
from skillcore import write_jsonl

BIN = Path(sys.executable).parent


def sft_args(model: Path, data: Path, out: Path) -> list[str]:
    return [
        "sft", "--model", str(model), "--data", str(data), "--out", str(out), "--preset", "cpu-demo",
        "--set", "num_train_epochs=1", "--set", "per_device_train_batch_size=8", "--set", "save_steps=100",
    ]  # fmt: skip


@pytest.mark.slow
def test_torchrun_two_ranks_train_one_run_one_checkpoint(
    tiny_student_dir: Path, world_pool_small, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "selected.jsonl"
    write_jsonl(data, world_pool_small[:32])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": "distributed",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    two = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "distill.cli",
         *sft_args(tiny_student_dir, data, tmp_path / "two")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    result = json.loads((tmp_path / "two" / "sft_result.json").read_text())
    # two ranks really trained: the accelerator saw two processes, and each step took 2 x 8 examples
    assert result["world_size"] == 2 and result["steps"] == 2
    assert two.stdout.count("2 steps on 2 processes") == 2  # both ranks ran the entry point to the end

    one = subprocess.run(
        [str(BIN / "distill"), *sft_args(tiny_student_dir, data, tmp_path / "one"), "--no-mlflow"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    assert json.loads((tmp_path / "one" / "sft_result.json").read_text())["steps"] == 4

    a = load_file(tmp_path / "two" / "model" / "model.safetensors")
    b = load_file(tmp_path / "one" / "model" / "model.safetensors")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("distributed")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # rank 0 logs; rank 1 trains without a run
    assert runs[0].data.params["per_device_train_batch_size"] == "8"
    assert "train/train_loss" in runs[0].data.metrics


def test_accelerate_configs_for_the_papers_recipe() -> None:
    """The GPU launch configs parse with accelerate's own loader and give the paper's global batch of 8."""
    from accelerate.commands.config.config_args import load_config_from_file
    from distill.sft import load_sft_settings

    paper = load_sft_settings("paper", gradient_accumulation_steps=1)  # what the configs' comments say
    for name, kind in (("deepspeed_zero3.yaml", "DEEPSPEED"), ("fsdp.yaml", "FSDP")):
        path = Path(__file__).resolve().parents[1] / "infra" / "accelerate" / name
        config = load_config_from_file(str(path))
        assert config.distributed_type.value == kind and config.mixed_precision == "bf16"
        assert config.num_processes * paper.global_batch_size == 8
        assert "--preset paper" in path.read_text() and "gradient_accumulation_steps=1" in path.read_text()
    fsdp = load_config_from_file(
        str(Path(__file__).resolve().parents[1] / "infra" / "accelerate" / "fsdp.yaml")
    )
    from transformers.models.qwen3 import modeling_qwen3

    assert hasattr(modeling_qwen3, fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])
    zero = load_config_from_file(
        str(Path(__file__).resolve().parents[1] / "infra" / "accelerate" / "deepspeed_zero3.yaml")
    )
    assert zero.deepspeed_config["zero_stage"] == 3 and zero.deepspeed_config["zero3_save_16bit_model"]
