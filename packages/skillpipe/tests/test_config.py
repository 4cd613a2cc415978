"""The pipeline's config tree: presets, user files with a base, flags and --set, and errors that name the key."""

from __future__ import annotations

import pytest
from distill.eval import load_eval_config
from distill.sft import load_sft_settings
from skillpipe.config import ConfigError, load_config, parse_set, preset_names


def test_shipped_presets_resolve_and_say_where_they_came_from():
    assert {"cpu-demo", "paper", "smoke"} <= set(preset_names())
    demo = load_config()
    assert demo.preset == "cpu-demo" and demo.offline and demo.student.model is None
    # the SFT and evaluation sections are the distill presets' settings, resolved in full
    assert demo.train.sft == load_sft_settings("cpu-demo")
    assert demo.evaluate.eval == load_eval_config("cpu-demo")
    assert (demo.select.strategy, demo.select.k, demo.select.temperature, demo.select.w_max) == (
        "skill",
        1000,
        0.5,
        10,
    )
    assert demo.format.skill_aware and demo.select.baselines == ["random"]
    paper = load_config(preset="paper")
    assert paper.student.model == "Qwen/Qwen3-8B" and paper.engine.kind == "vllm"
    assert (paper.select.temperature, paper.select.w_max) == (1.0, 1000)
    assert paper.train.sft == load_sft_settings("paper") and paper.evaluate.eval.samples_per_problem == 8
    assert paper.profile.limit is None and paper.profile.sampling.max_new_tokens == 8192
    smoke = load_config(preset="smoke")  # a preset that starts from another one
    assert smoke.preset == "cpu-demo+smoke" and smoke.select.k == 12 and smoke.select.w_max == 10


def test_overrides_apply_in_order_and_one_seed_seeds_every_stage():
    cfg = load_config(
        preset="smoke",
        overrides={"select": {"k": 20}, "seed": 3},
        sets=["select.k=30", "train.sft.learning_rate=1e-4", "evaluate.benchmarks=[aime24, amc23]"],
    )
    assert cfg.select.k == 30  # --set wins over flags, flags over the preset
    assert cfg.train.sft.learning_rate == 1e-4 and cfg.train.sft.num_train_epochs == 3  # rest of cpu-demo
    assert cfg.evaluate.benchmarks == ["aime24", "amc23"]
    assert cfg.select.seed == cfg.train.sft.seed == cfg.evaluate.eval.seed == cfg.profile.sampling.seed == 3
    # the weight temperature and the sampling temperature are separate keys
    both = load_config(sets=["select.temperature=2", "profile.sampling.temperature=0"])
    assert both.select.temperature == 2 and both.profile.sampling.temperature == 0


def test_a_user_file_starts_from_a_preset(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: paper\nstudent:\n  model: Qwen/Qwen3-4B\nselect:\n  w_max: 10\n")
    cfg = load_config(config_file=mine)
    assert cfg.preset == "paper+mine.yaml" and cfg.student.model == "Qwen/Qwen3-4B"
    assert cfg.select.w_max == 10 and cfg.select.temperature == 1.0 and cfg.train.preset == "paper"
    plain = tmp_path / "plain.yaml"
    plain.write_text("select:\n  k: 7\n")
    assert load_config(config_file=plain).select.k == 7  # no base: the section defaults


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"sets": ["select.w_max=0.5"]},
            "select.w_max: Input should be greater than or equal to 1 (got 0.5)",
        ),
        ({"sets": ["train.sft.lerning_rate=1"]}, "train.sft.lerning_rate: Extra inputs are not permitted"),
        ({"sets": ["selct.k=1"]}, "selct: Extra inputs are not permitted"),
        ({"sets": ["evaluate.preset=nope"]}, "unknown evaluation preset 'nope'"),
        ({"sets": ["train.preset=nope"]}, "unknown SFT preset 'nope'"),
        ({"sets": ["engine.kind=openai"]}, "engine.kind=openai needs engine.url"),
        ({"sets": ["data.pool=p.jsonl"]}, "data.pool needs data.tree"),
        ({"sets": ["select.k"]}, "--set takes section.key=value"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"preset": "paper", "config_file": "x.yaml"}, "give --preset or --config, not both"),
    ],
)
def test_bad_settings_name_the_key(kwargs, expected):
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    assert expected in str(info.value)


def test_bad_files_name_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("select:\n  k: 1\n    w_max: 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml line 3: not valid YAML"):
        load_config(config_file=broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="holds a mapping"):
        load_config(config_file=listed)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(config_file=tmp_path / "none.yaml")


def test_set_values_are_parsed_as_yaml():
    assert parse_set(["a.b=1e-4", "a.c=true", "d=[x, y]", "e.f=null", "e.g="]) == {
        "a": {"b": 1e-4, "c": True},
        "d": ["x", "y"],
        "e": {"f": None, "g": ""},
    }


def test_engine_options_reach_the_engines_argument_builders():
    from distill.engines.vllm_engine import llm_kwargs
    from skillpipe.config import EngineSection

    vllm = EngineSection(kind="vllm", tensor_parallel_size=4)
    assert llm_kwargs("/models/student", **vllm.options())["tensor_parallel_size"] == 4
    assert EngineSection(kind="openai", url="http://127.0.0.1:8000/v1").options() == {
        "base_url": "http://127.0.0.1:8000/v1"
    }
    assert EngineSection(batch_size=8).options() == {"batch_size": 8}


@pytest.mark.parametrize("pair", ["train.sft=5", "profile=3", "select=[1]", "evaluate.eval=x"])
def test_a_section_given_a_scalar_is_refused(pair):
    with pytest.raises(ConfigError, match="holds a mapping of settings"):
        load_config(sets=[pair])
