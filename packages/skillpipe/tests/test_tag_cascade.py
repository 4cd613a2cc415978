"""The pipeline's ``tag.cascade`` setting: validated where it is read, and used by the tag stage when the
tag backend is the LLM one (a scripted OpenAI-compatible server on loopback plays the LLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from skillcore import read_jsonl, write_jsonl
from skillpipe import stages
from skillpipe.config import ConfigError, load_config
from skilltag.engine import ProblemInput, problem_text
from skilltag.testing import SMALL_TREE, ScriptedModel, knows_chains, small_problems


def test_cascade_settings_are_checked() -> None:
    cfg = load_config(
        preset="smoke", sets=["tag.backend=openai", "tag.cascade.seed_size=10", "tag.cascade.holdout=2"]
    )
    assert cfg.tag.cascade is not None and cfg.tag.cascade.threshold == 0.65
    assert load_config(preset="smoke").tag.cascade is None  # off unless asked for
    with pytest.raises(ConfigError, match=r"tag: .*tag.cascade needs tag.backend=openai"):
        load_config(preset="smoke", sets=["tag.cascade.seed_size=1000"])
    with pytest.raises(ConfigError, match=r"holdout \(10\) must be below seed_size \(10\)"):
        load_config(preset="smoke", sets=["tag.backend=openai", "tag.cascade={seed_size: 10, holdout: 10}"])
    with pytest.raises(ConfigError, match="in-process tagger"):
        load_config(
            preset="smoke",
            sets=["tag.backend=openai", "tag.tagger=grpc://127.0.0.1:1", "tag.cascade.seed_size=1000"],
        )


def test_tag_stage_runs_the_cascade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    problems = small_problems(24)
    write_jsonl(tmp_path / "pool.jsonl", problems)
    (tmp_path / "tree.json").write_text(json.dumps(SMALL_TREE))
    model = ScriptedModel(knows_chains(problems))
    with model as url:
        cfg = load_config(
            preset="smoke",
            sets=[
                f"data.pool={tmp_path / 'pool.jsonl'}",
                f"data.tree={tmp_path / 'tree.json'}",
                "tag.backend=openai",
                f"tag.openai_urls=[{url}]",
                "tag.openai_model=scripted",
                "tag.cascade={seed_size: 10, holdout: 3, threshold: 0.65}",
            ],
        )
        st = stages.Stages(tmp_path / "work", seed=cfg.seed)
        data = stages.data(st, cfg.data)

        def tagger() -> stages.InProcessTagger:
            return stages.InProcessTagger(
                cfg.tag, data.path("tree"), None, st.workdir / "tag" / "cache.sqlite"
            )

        tagged = stages.tag(st, cfg.tag, data, tagger())
        asked = len(model.asked)
        again = stages.tag(st, cfg.tag, data, tagger())
        assert again.reused and again.key == tagged.key and len(model.asked) == asked
    report = json.loads(tagged.path("cascade").read_text())
    rows = list(read_jsonl(tagged.path("tagged")))
    assert [r["unique_id"] for r in rows] == [p["unique_id"] for p in problems]
    assert report["seed"] == 10 and report["holdout"] == 3
    # the LLM saw the seed and the fallbacks, each once (root + category on this depth-2 tree)
    roots = {a.problem for a in model.asked if a.path == ()}
    assert len(roots) == 10 + report["fallbacks"] == report["llm"]["problems"]
    assert asked == report["llm"]["requests"] == 2 * report["llm"]["problems"]
    fallback_texts = {
        problem_text(ProblemInput.from_record(r), 400)
        for r in rows
        if r["metadata"]["tagger"]["cascade"]["source"] == "fallback"
    }
    assert fallback_texts <= roots
    exemplar_ids = {r["unique_id"] for r in read_jsonl(tagged.path("exemplars"))}
    held = {r["unique_id"] for r in rows if r["metadata"]["tagger"]["cascade"]["source"] == "holdout"}
    assert len(exemplar_ids) == 7 and len(held) == 3 and not exemplar_ids & held
    assert tagged.info["cascade_fallbacks"] == report["fallbacks"]
