"""Every YAML under recipes/ parses into its entry point's dataclasses and validates; configs reject bad keys."""

import glob
import os
import warnings

import pytest
from conftest import ROOT

from selfcorrect.errors import UserError
from selfcorrect.parsing import parse_config

RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "**", "*.yaml"), recursive=True))


def types_for(name):
    """The configs the recipe's entry point parses, as that entry point declares them."""
    import importlib

    if name in ("data_gen", "eval"):
        return importlib.import_module(f"{name}.__main__").CONFIG_TYPES
    return importlib.import_module(f"train.{name}").config_types()


def test_recipe_set_is_complete():
    for model in ("qwen2.5-1.5b-instruct", "qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3"):
        for kind in ("data_gen", "sft", "dpo", "grpo", "score", "kround", "eval"):
            assert os.path.isfile(os.path.join(ROOT, "recipes", model, "bbq", f"{kind}.yaml")), (model, kind)
    assert len(glob.glob(os.path.join(ROOT, "recipes", "qwen2.5-7b-instruct", "gsm8k", "*.yaml"))) == 7


@pytest.mark.parametrize("path", RECIPES, ids=[os.path.relpath(p, ROOT) for p in RECIPES])
def test_recipe_parses_and_validates(path):
    from selfcorrect.tasks import task_and_prompt_set
    from train.run import TRAIN_DEFAULTS, device_overrides

    kind = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
        first = f.readline()
    assert first.startswith("# python -m ") or first.startswith("# accelerate launch "), "recipe must open with its command"
    assert os.path.relpath(path, ROOT) in first, "the opening command must name this recipe"
    types_ = types_for(kind)
    training = kind not in ("data_gen", "eval")
    extra = device_overrides(*types_) if training else []
    defaults = TRAIN_DEFAULTS if training else ({"rounds": 5} if kind == "eval" else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objs = parse_config(types_, ["--config", path, *extra], defaults=defaults)  # every __post_init__ check runs here
    deprecated = [str(w.message) for w in caught if "deprecated" in str(w.message)]
    assert not deprecated, f"the recipe uses a deprecated key: {deprecated}"
    task_opts = next(o for o in objs if type(o).__name__ == "TaskConfig")
    task, _ = task_and_prompt_set(task_opts)
    assert task.name == task_opts.task
    if training:
        from train.run import check_training_values

        check_training_values(objs[-1])
        assert objs[-1].output_dir


def test_unknown_key_names_the_closest(tmp_path):
    from selfcorrect.config import RolloutConfig

    r = tmp_path / "r.yaml"
    r.write_text("roundss: 3\n")
    with pytest.raises(UserError, match=r"unknown recipe key 'roundss' \(did you mean 'rounds'\?\)"):
        parse_config([RolloutConfig], ["--config", str(r)])
    r.write_text("- not a mapping\n")
    with pytest.raises(UserError, match="must be a mapping"):
        parse_config([RolloutConfig], ["--config", str(r)])
    with pytest.raises(UserError, match="recipe not found"):
        parse_config([RolloutConfig], ["--config", str(tmp_path / "none.yaml")])


def test_cli_overrides_yaml(tmp_path):
    from selfcorrect.config import RolloutConfig, TaskConfig

    r = tmp_path / "r.yaml"
    r.write_text("rounds: 3\ntask: gsm8k\n")
    opts, run = parse_config([TaskConfig, RolloutConfig], ["--config", str(r), "--rounds", "7"])
    assert run.rounds == 7 and opts.task == "gsm8k"
    # The dash spelling is accepted too.
    (run,) = parse_config([RolloutConfig], ["--max-new-tokens", "5"])
    assert run.max_new_tokens == 5
