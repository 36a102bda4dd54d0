"""Every YAML under recipes/ parses into its entry point's dataclasses and validates; configs reject bad keys."""

import glob
import os

import pytest
from conftest import ROOT

from data_gen.config import parse_config
from data_gen.errors import UserError

RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "**", "*.yaml"), recursive=True))


def types_for(name):
    from trl import DPOConfig, GRPOConfig, SFTConfig

    from data_gen.__main__ import DataGenArgs
    from data_gen.run import RolloutArgs
    from eval.__main__ import EvalArgs
    from train.common import TrainArgs
    from train.grpo import GRPOArgs
    from train.kround import KRoundConfig
    from train.score import SCoReConfig
    from train.sft import SFTArgs

    return {
        "data_gen": [RolloutArgs, DataGenArgs],
        "eval": [RolloutArgs, EvalArgs],
        "sft": [SFTArgs, SFTConfig],
        "dpo": [TrainArgs, DPOConfig],
        "grpo": [GRPOArgs, GRPOConfig],
        "score": [TrainArgs, SCoReConfig],
        "kround": [TrainArgs, KRoundConfig],
    }[name]


def test_recipe_set_is_complete():
    for model in ("qwen2.5-1.5b-instruct", "qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3"):
        for kind in ("data_gen", "sft", "dpo", "grpo", "score", "kround", "eval"):
            assert os.path.isfile(os.path.join(ROOT, "recipes", model, "bbq", f"{kind}.yaml")), (model, kind)
    assert len(glob.glob(os.path.join(ROOT, "recipes", "qwen2.5-7b-instruct", "gsm8k", "*.yaml"))) == 7


@pytest.mark.parametrize("path", RECIPES, ids=[os.path.relpath(p, ROOT) for p in RECIPES])
def test_recipe_parses_and_validates(path):
    from data_gen.prompts import get_prompt_set
    from data_gen.tasks import get_task
    from train.common import device_overrides

    kind = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
        first = f.readline()
    assert first.startswith("# python -m ") or first.startswith("# accelerate launch "), "recipe must open with its command"
    assert os.path.relpath(path, ROOT) in first, "the opening command must name this recipe"
    extra = device_overrides(*types_for(kind)) if kind in ("sft", "dpo", "grpo", "score", "kround") else []
    objs = parse_config(types_for(kind), ["--config", path, *extra], defaults={"rounds": 5} if kind == "eval" else None)
    args = objs[0]
    for obj in objs:
        if hasattr(obj, "validate"):
            obj.validate()
    get_prompt_set(args.prompt_set, getattr(args, "prompt_sets_file", None))
    assert get_task(args.task).name == args.task
    if kind in ("sft", "dpo", "grpo"):
        assert objs[1].output_dir and objs[1].learning_rate > 0


def test_unknown_key_names_the_closest(tmp_path):
    from data_gen.run import RolloutArgs

    r = tmp_path / "r.yaml"
    r.write_text("roundss: 3\n")
    with pytest.raises(UserError, match=r"unknown recipe key 'roundss' \(did you mean 'rounds'\?\)"):
        parse_config([RolloutArgs], ["--config", str(r)])
    r.write_text("- not a mapping\n")
    with pytest.raises(UserError, match="must be a mapping"):
        parse_config([RolloutArgs], ["--config", str(r)])
    with pytest.raises(UserError, match="recipe not found"):
        parse_config([RolloutArgs], ["--config", str(tmp_path / "none.yaml")])


def test_cli_overrides_yaml(tmp_path):
    from data_gen.run import RolloutArgs

    r = tmp_path / "r.yaml"
    r.write_text("rounds: 3\ntask: gsm8k\n")
    (args,) = parse_config([RolloutArgs], ["--config", str(r), "--rounds", "7"])
    assert args.rounds == 7 and args.task == "gsm8k"
