"""What every command promises a user: it knows what run a folder holds, its saved config re-runs it,
wrong values fail before any work, and every mistake is one `error:` line with exit code 2.

Most cases run the entry points in-process through ``run_cli`` (what ``python -m ...`` runs), so a
case costs milliseconds; a few run the real command line.
"""

import importlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import ROOT, fixture
from test_first_gpu_run import one_rank_group  # noqa: F401 (a fixture)

from selfcorrect.cli import run_cli
from selfcorrect.errors import UserError


def cli(main, argv, capsys):
    """(exit code, stderr) of an entry point run as its command line runs it."""
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
        raise SystemExit(0)
    err = capsys.readouterr().err
    return e.value.code, err


def one_error_line(code, err, needle):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and needle in lines[0], err[-2000:]
    assert "Traceback" not in err


def data_gen_main():
    from data_gen.__main__ import main

    return main


def eval_main():
    from eval.__main__ import main

    return main


# ---- --help of every command -----------------------------------------------------------------------

# command: (module, an option its help must list with the underscore spelling that is accepted)
COMMANDS = {
    "python -m data_gen": ("data_gen.__main__", "--max_new_tokens"),
    "python -m eval": ("eval.__main__", "--n_boot"),
    "python -m eval.external": ("eval.external", "--dataset_path"),
    "python -m eval.compare": ("eval.compare", "--output_dir"),
    "python -m train.merge": ("train.merge", "--trust_remote_code"),
    "train/sft.py": ("train.sft", "--train_on"),
    "train/dpo.py": ("train.dpo", "--dataset_path"),
    "train/grpo.py": ("train.grpo", "--abandon_penalty"),
    "train/score.py": ("train.score", "--stage1_steps"),
    "train/kround.py": ("train.kround", "--reward_mode"),
}


LIBRARY_OPTIONS = "Most used TRL/transformers options:"
SCREEN = 66  # lines of a terminal a person reads without scrolling back


def check_help(out: str, prog: str, description: str, option: str) -> None:
    """What the command does first, then the project's options (``option`` among them) within one
    screen, then the library's most used options and the way to the rest."""
    lines = out.splitlines()
    assert lines[0].startswith(f"usage: {prog}") and lines[2] == description.strip().splitlines()[0]
    own = lines[: lines.index(LIBRARY_OPTIONS)] if LIBRARY_OPTIONS in lines else lines
    assert len(own) <= SCREEN, f"{len(own)} lines before the library options"
    assert any(line.startswith(f"  {option} ") for line in own) and "--config" in out and "__main__" not in out
    if LIBRARY_OPTIONS in lines:
        assert lines[-1].endswith(f"{prog} --help-all") and len(lines) - len(own) <= 40


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_every_command_has_help(prog, capsys, monkeypatch):
    """--help of each entry point (in-process: the same parser its command line builds)."""
    monkeypatch.setenv("COLUMNS", "100")
    module, option = COMMANDS[prog]
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    check_help(capsys.readouterr().out, prog, mod.__doc__, option)


def test_help_all_lists_the_library_options(capsys):
    from train.sft import main

    with pytest.raises(SystemExit):
        main(["--help"])
    short = capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--help-all"])
    full = capsys.readouterr().out
    assert e.value.code == 0 and "--train_on" in full and "--lr_scheduler_type" in full and "--lr_scheduler_type" not in short


@pytest.mark.parametrize(
    "command, prog, option", [(["-m", "eval"], "python -m eval", "--n_boot"), (["train/sft.py"], "train/sft.py", "--train_on")]
)
def test_help_through_the_command_line(command, prog, option):
    """The real command line too (a "95%" in a help string once crashed ``python -m eval --help``; a
    script's own options are declared in __main__ and must still come first)."""
    p = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"}
    )
    assert p.returncode == 0, p.stderr[-2000:]
    doc = importlib.import_module("eval.__main__" if prog == "python -m eval" else "train.sft").__doc__
    check_help(p.stdout, prog, doc, option)


def test_console_commands_are_the_documented_entry_points():
    """[project.scripts] names one console command per entry point, each running that module's main."""
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    targets = {target.split(":")[0] for target in scripts.values()}
    assert targets == {module for module, _ in COMMANDS.values()}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
    installed = os.path.join(os.path.dirname(sys.executable), "selfcorrect-eval")
    if os.path.exists(installed):  # the editable install made the commands
        p = subprocess.run([installed, "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"})
        assert p.returncode == 0 and "--n_boot" in p.stdout, p.stderr[-2000:]


# ---- strict values, before any work ----------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe, needle",
    [
        ("rounds: true\n", "recipe key 'rounds' must be int (got True)"),
        ("rounds: 2.7\n", "recipe key 'rounds' must be int (got 2.7)"),
        ("rounds: [3]\n", "recipe key 'rounds' must be int"),
        ("sft_sources: final_correct\n", "recipe key 'sft_sources' must be"),
        ("temperature: -1\n", "temperature must be >= 0.0"),
        ("top_p: 5\n", "top_p must be in (0, 1]"),
        ("heldout: true\n", "heldout: true needs heldout_fraction > 0"),
        ("prompt_set: intrinsic-moral\ntask: gsm8k\n", "asks for an answer choice but task 'gsm8k' has no choices"),
    ],
)
def test_wrong_recipe_values_fail_before_work(recipe, needle, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(recipe + f"output_dir: {tmp_path / 'out'}\ndataset_path: {fixture('bbq')}\n")
    code, err = cli(data_gen_main(), ["--config", str(path)], capsys)
    one_error_line(code, err, needle)
    assert not (tmp_path / "out").exists()  # nothing was written


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--rounds", "2.7"], "invalid int value: '2.7'"),
        (["--report_to", "tensorboard"], "report_to must be one of none, wandb"),
        (["--n_boot", "0"], "n_boot must be >= 1"),
        (["--probe_statements", "task", "--probe", "true", "--task", "gsm8k", "--prompt_set", "cot"], "has no probe statements"),
    ],
)
def test_wrong_eval_values_fail_before_work(args, needle, tiny_model_dir, tmp_path, capsys):
    data = fixture("gsm8k") if "gsm8k" in args else fixture("bbq")
    code, err = cli(
        eval_main(),
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_path",
            data,
            "--limit",
            "2",
            "--output_dir",
            str(tmp_path / "e"),
            *args,
        ],
        capsys,
    )
    one_error_line(code, err, needle)
    assert not (tmp_path / "e" / "traces.jsonl").exists()


def test_exponent_floats_are_floats(tmp_path):
    """``2e-5`` is a string in YAML 1.1 (PyYAML); recipes and json.dump write learning rates that way."""
    from selfcorrect.parsing import parse_config

    @dataclass
    class C:
        learning_rate: float = 1.0
        rounds: int = 1

    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 2e-5\n")
    assert parse_config([C], ["--config", str(recipe)])[0].learning_rate == 2e-5
    recipe.write_text("rounds: 1e3\n")
    with pytest.raises(UserError, match="recipe key 'rounds' must be int"):
        parse_config([C], ["--config", str(recipe)])


def test_non_utf8_recipe_and_bad_task_spec_regex(tmp_path, capsys):
    bad = tmp_path / "r.yaml"
    bad.write_bytes(b"rounds: 2\n\xff\xfe\n")
    one_error_line(*cli(data_gen_main(), ["--config", str(bad)], capsys), "not a UTF-8 text file")
    (tmp_path / "bbq").mkdir()
    (tmp_path / "bbq" / "Age.jsonl").write_bytes(open(fixture("bbq", "Age.jsonl"), "rb").readline() + b"\xff\xfe\n")
    one_error_line(
        *cli(data_gen_main(), ["--dataset_path", str(tmp_path / "bbq"), "--output_dir", str(tmp_path / "d")], capsys),
        "Age.jsonl:2: not UTF-8 text",
    )
    spec = tmp_path / "t.yaml"
    spec.write_text("prompt_template: '{q}'\ngold_field: a\nanswer_regex: '(unclosed'\n")
    one_error_line(
        *cli(data_gen_main(), ["--task", str(spec), "--prompt_set", "cot", "--output_dir", str(tmp_path / "o")], capsys),
        "answer_regex is not a valid regular expression",
    )


def test_bbq_label_out_of_range_is_named(tmp_path, capsys):
    row = json.loads(open(fixture("bbq", "Age.jsonl")).readline())
    row["label"] = 7
    (tmp_path / "Age.jsonl").write_text(json.dumps(row) + "\n")
    code, err = cli(data_gen_main(), ["--dataset_path", str(tmp_path), "--output_dir", str(tmp_path / "o")], capsys)
    one_error_line(code, err, "Age.jsonl:1")
    assert "label" in err


# ---- models that cannot be loaded -----------------------------------------------------------------


def test_bin_only_and_corrupt_models_are_one_line(tiny_model_dir, tmp_path, capsys):
    import shutil

    bin_only = tmp_path / "bin"
    shutil.copytree(tiny_model_dir, bin_only)
    os.rename(bin_only / "model.safetensors", bin_only / "pytorch_model.bin")
    args = ["--dataset_path", fixture("bbq"), "--limit", "1", "--rounds", "1", "--max_new_tokens", "2"]
    one_error_line(
        *cli(data_gen_main(), ["--model_name_or_path", str(bin_only), "--output_dir", str(tmp_path / "a"), *args], capsys),
        "loads safetensors only",
    )
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    (corrupt / "config.json").write_text("{not json")
    one_error_line(
        *cli(data_gen_main(), ["--model_name_or_path", str(corrupt), "--output_dir", str(tmp_path / "b"), *args], capsys),
        "cannot load the tokenizer of",
    )
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    one_error_line(
        *cli(data_gen_main(), ["--model_name_or_path", str(broken), "--output_dir", str(tmp_path / "c"), *args], capsys),
        f"cannot load {broken}",
    )


def test_adapter_of_another_base_is_refused(tiny_model_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from tiny_model import build
    from transformers import AutoModelForCausalLM

    other = build(str(tmp_path / "other"), seed=1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(other), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    code, err = cli(
        eval_main(),
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--adapter",
            str(tmp_path / "adapter"),
            "--dataset_path",
            fixture("bbq"),
            "--limit",
            "1",
            "--output_dir",
            str(tmp_path / "e"),
        ],
        capsys,
    )
    one_error_line(code, err, f"was trained on {other}")


# ---- a run never mixes with another ---------------------------------------------------------------


def test_run_identity_holds_the_grader_and_resolves_a_first_download(tmp_path):
    """Also: a run that stopped before writing a result does not lock its folder."""
    from selfcorrect.config import DataConfig, RolloutConfig, SplitConfig
    from selfcorrect.prompts import get_prompt_set
    from selfcorrect.run_identity import UNRESOLVED, check_run
    from selfcorrect.tasks.toxicity import ToxicityTask
    from selfcorrect.trace_run import trace_settings

    def settings(threshold):
        task = ToxicityTask(classifier="some/classifier", threshold=threshold)
        return trace_settings(RolloutConfig(), DataConfig(), SplitConfig(), task, get_prompt_set("intrinsic"))

    out, owned = tmp_path / "run", ["traces.jsonl", "config.json"]
    assert check_run(str(out), "data_gen", settings(0.3), owned, False) is False
    (out / "config.json").write_text("{}")
    assert check_run(str(out), "data_gen", settings(0.5), owned, False) is False  # nothing written yet: taken over
    (out / "traces.jsonl").write_text("{}\n")
    assert check_run(str(out), "data_gen", settings(0.5), owned, False) is True
    with pytest.raises(UserError, match="task_settings"):  # another grader would mix grades
        check_run(str(out), "data_gen", settings(0.7), owned, False)
    # A hub model not downloaded when the run started: the run that downloads it resumes and records it.
    hub = tmp_path / "hub"
    first = {**settings(0.5), "model_weights": UNRESOLVED}
    check_run(str(hub), "data_gen", first, owned, False)
    (hub / "traces.jsonl").write_text("{}\n")
    assert check_run(str(hub), "data_gen", {**first, "model_weights": "abc123"}, owned, False) is True
    with pytest.raises(UserError, match="model_weights"):
        check_run(str(hub), "data_gen", {**first, "model_weights": "def456"}, owned, False)


def test_overwrite_never_deletes_another_commands_run(tmp_path, capsys):
    """--overwrite removes only what the same command wrote: an eval folder survives eval.external."""
    from eval.external import main as external

    out = tmp_path / "ev"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"command": "eval", "settings": {}}))
    (out / "probe.json").write_text(json.dumps({"heldout_accuracy": 0.9}))
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "Age/0", "responses": ["C"]}) + "\n")
    argv = ["--task", "bbq", "--dataset_path", fixture("bbq"), "--predictions", str(preds), "--output_dir", str(out)]
    for extra in ([], ["--overwrite", "true"]):
        code, err = cli(external, [*argv, "--n_boot", "10", *extra], capsys)
        one_error_line(code, err, "holds a 'eval' run")
        assert "--overwrite" not in err  # never advice that would delete another command's run
    assert sorted(os.listdir(out)) == ["probe.json", "run.json"]


def test_data_gen_refuses_a_folder_made_with_other_settings(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "dg")
    base = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        fixture("bbq"),
        "--limit",
        "3",
        "--max_new_tokens",
        "3",
        "--output_dir",
        out,
    ]
    assert cli(data_gen_main(), [*base, "--rounds", "2"], capsys)[0] == 0
    before = open(os.path.join(out, "traces.jsonl")).read()
    code, err = cli(data_gen_main(), [*base, "--rounds", "4"], capsys)
    one_error_line(code, err, "was written with rounds=2, this run has rounds=4")
    assert open(os.path.join(out, "traces.jsonl")).read() == before  # not a row written
    code, err = cli(
        data_gen_main(),
        [*base, "--rounds", "2", "--task", "gsm8k", "--prompt_set", "cot", "--dataset_path", fixture("gsm8k")],
        capsys,
    )
    one_error_line(code, err, "was written with dataset=")
    # The explicit way out starts fresh.
    assert cli(data_gen_main(), [*base, "--rounds", "4", "--overwrite", "true"], capsys)[0] == 0
    rows = [json.loads(line) for line in open(os.path.join(out, "traces.jsonl"))]
    assert len(rows) == 3 and all(len(r["rounds"]) == 4 for r in rows)
    assert not [f for f in os.listdir(out) if ".tmp." in f]


def test_eval_of_an_adapter_into_the_base_folder_is_refused(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "ev")
    base = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        fixture("bbq"),
        "--limit",
        "2",
        "--rounds",
        "2",
        "--max_new_tokens",
        "3",
        "--output_dir",
        out,
        "--n_boot",
        "10",
    ]
    assert cli(eval_main(), base, capsys)[0] == 0
    code, err = cli(eval_main(), [*base, "--rounds", "3"], capsys)
    one_error_line(code, err, "rounds=2, this run has rounds=3")
    assert cli(eval_main(), base, capsys)[0] == 0  # the same settings resume (nothing left to do)


def test_training_refuses_another_methods_folder(tiny_model_dir, tmp_path, capsys):
    from data_gen.__main__ import main as dg
    from train.dpo import main as dpo
    from train.sft import main as sft

    data = str(tmp_path / "data")
    assert (
        cli(
            dg,
            [
                "--model_name_or_path",
                tiny_model_dir,
                "--dataset_path",
                fixture("bbq"),
                "--limit",
                "4",
                "--rounds",
                "2",
                "--max_new_tokens",
                "3",
                "--output_dir",
                data,
                "--sft_sources",
                "rationalised",
                "--dpo_sources",
                "rationalised",
            ],
            capsys,
        )[0]
        == 0
    )
    out = str(tmp_path / "run")
    common = [
        "--model_name_or_path",
        tiny_model_dir,
        "--output_dir",
        out,
        "--max_steps",
        "1",
        "--report_to",
        "none",
        "--per_device_train_batch_size",
        "2",
        "--disable_tqdm",
        "true",
    ]
    assert cli(sft, [*common, "--dataset_path", f"{data}/sft.jsonl"], capsys)[0] == 0
    # Its saved config re-launches it: transformers' to_dict masks every *_token key ("<PAD_TOKEN>").
    from train.run import parse_training
    from train.sft import config_types as sft_config_types

    saved = os.path.join(out, "selfcorrect_config.json")
    assert "<PAD_TOKEN>" not in open(saved).read() and "overwrite" not in json.load(open(saved))
    setup, _, cfg = parse_training(sft_config_types(), ["--config", saved], "t")
    assert cfg.pad_token is None and cfg.max_steps == 1 and setup.data.dataset_path == f"{data}/sft.jsonl"
    one_error_line(*cli(dpo, [*common, "--dataset_path", f"{data}/dpo.jsonl"], capsys), "holds a 'train/sft' run")
    one_error_line(
        *cli(sft, [*common, "--dataset_path", f"{data}/sft.jsonl", "--learning_rate", "1e-3"], capsys), "learning_rate"
    )
    card = open(os.path.join(out, "README.md")).read()
    # A local model and local data: no hub ids to claim, so the front matter names none; the table does.
    assert card.startswith("---\nlibrary_name: peft") and "base_model:" not in card and "datasets:" not in card
    assert f"| base model | {tiny_model_dir} (local) |" in card and f"| data_gen source | {fixture('bbq')} (local) |" in card
    assert f"--dataset_path {fixture('bbq')}" in card
    # logging_steps (TRL's default 10) is longer than the run: the card reports the run's average loss.
    assert "final train loss | " in card and "(average over the run)" in card and "| n/a |" not in card


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--learning_rate", "0"], "learning_rate must be >= "),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be >= 1"),
        (["--lora_r", "0"], "lora_r must be >= 1"),
        (["--max_steps", "0"], "max_steps must be >= 1"),
        (["--resume_from_checkpoint", "true"], "no checkpoint-N folder in"),
    ],
)
def test_wrong_training_values_fail_before_the_model_loads(args, needle, tmp_path, capsys, monkeypatch):
    import train.sft
    from train.sft import main as sft

    monkeypatch.setattr(train.sft, "load_policy", lambda *a, **k: pytest.fail("the model loaded before the check"))
    rows = tmp_path / "sft.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    code, err = cli(sft, ["--dataset_path", str(rows), "--output_dir", str(tmp_path / "o"), "--max_steps", "1", *args], capsys)
    one_error_line(code, err, needle)


def test_training_data_made_for_another_task_is_refused(tmp_path, capsys):
    from train.grpo import main as grpo

    rows = tmp_path / "rl.jsonl"
    example = json.dumps({"id": "Age/0", "question": "q", "gold": "A"})
    rows.write_text(json.dumps({"id": "Age/0", "task": "bbq", "prompt_set": "cot", "example": example}) + "\n")
    code, err = cli(
        grpo, ["--dataset_path", str(rows), "--task", "gsm8k", "--prompt_set", "cot", "--output_dir", str(tmp_path / "o")], capsys
    )
    one_error_line(code, err, "data was made with task 'bbq' but the recipe says 'gsm8k'")


def test_sft_data_written_in_another_prompt_wording_is_refused(tmp_path, capsys, monkeypatch):
    import train.sft
    from selfcorrect.prompts import get_prompt_set
    from train.sft import main as sft

    monkeypatch.setattr(train.sft, "load_policy", lambda *a, **k: pytest.fail("the model loaded before the check"))
    version = get_prompt_set("intrinsic-moral").version
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "task": "bbq"}
    rows = tmp_path / "sft.jsonl"
    rows.write_text(json.dumps({**row, "prompt_set": "intrinsic-moral", "prompt_set_version": version + 1}) + "\n")
    argv = ["--dataset_path", str(rows), "--output_dir", str(tmp_path / "o"), "--task", "bbq", "--prompt_set", "intrinsic-moral"]
    one_error_line(
        *cli(sft, argv, capsys), f"data was made with prompt_set_version '{version + 1}' but the recipe says '{version}'"
    )


# ---- saved configs re-run their command, and hold no secret -----------------------------------------


def test_saved_configs_relaunch_and_keep_token_named_options(tiny_model_dir, tmp_path, capsys, monkeypatch):
    secret = "hf_" + "x" * 30
    monkeypatch.setenv("HF_TOKEN", secret)
    out = str(tmp_path / "dg")
    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_path",
        fixture("bbq"),
        "--limit",
        "2",
        "--rounds",
        "2",
        "--max_new_tokens",
        "3",
        "--output_dir",
        out,
        "--classifier",
        secret,
    ]
    assert cli(data_gen_main(), args, capsys)[0] == 0
    saved = json.load(open(os.path.join(out, "config.json")))
    assert saved["max_new_tokens"] == 3 and saved["classifier"] == "<redacted>"
    assert secret not in open(os.path.join(out, "config.json")).read()
    assert secret not in open(os.path.join(out, "run.json")).read()
    saved["classifier"] = None
    (tmp_path / "again.json").write_text(json.dumps(saved))
    assert cli(data_gen_main(), ["--config", str(tmp_path / "again.json"), "--output_dir", str(tmp_path / "dg2")], capsys)[0] == 0
    ev = str(tmp_path / "ev")
    assert cli(eval_main(), [*args[:-2], "--output_dir", ev, "--rounds", "2", "--n_boot", "10"], capsys)[0] == 0
    assert cli(eval_main(), ["--config", os.path.join(ev, "config.json")], capsys)[0] == 0  # resumes its own run


def test_config_redaction_is_by_name_and_value(monkeypatch):
    from dataclasses import dataclass

    from selfcorrect.saved_config import config_to_dict

    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123")

    @dataclass
    class C:
        max_new_tokens: int = 8
        pad_token: str = "<|endoftext|>"
        hub_token: str = "abc"
        note: str = "0123456789abcdef0123"
        key: str = "sk-" + "a" * 30

    d = config_to_dict(C())
    assert d == {
        "max_new_tokens": 8,
        "pad_token": "<|endoftext|>",
        "hub_token": "<redacted>",
        "note": "<redacted>",
        "key": "<redacted>",
    }


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--stage1_steps", "3"], "so that Stage II runs"),
        # nucleus sampling draws from a truncated distribution the trainer does not score
        (["--stage1_steps", "1", "--top_p", "0.9"], "top_p must be 1 (got 0.9)"),
    ],
)
def test_wrong_score_values_fail_before_work(extra, needle, tmp_path, capsys):
    from train.score import main as score

    rows = tmp_path / "rl.jsonl"
    rows.write_text(json.dumps({"example": "{}"}) + "\n")
    argv = ["--dataset_path", str(rows), "--output_dir", str(tmp_path / "o"), "--max_steps", "3", *extra]
    one_error_line(*cli(score, argv, capsys), needle)


@pytest.mark.parametrize("method", ["score", "kround"])
def test_on_policy_trainers_refuse_fsdp(method, tmp_path, capsys, monkeypatch):
    """On a GPU machine (gpu_count patched to 1, so the launch check passes) the on-policy loop
    refuses FSDP before writing anything: it would sample from sharded weights (DeepSpeed runs:
    tests/test_deepspeed.py)."""
    import importlib

    monkeypatch.setattr("selfcorrect.device.gpu_count", lambda: 1)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    rows = tmp_path / "rl.jsonl"
    rows.write_text(json.dumps({"example": "{}"}) + "\n")
    argv = ["--dataset_path", str(rows), "--output_dir", str(tmp_path / "o"), "--max_steps", "3"]
    argv += ["--stage1_steps", "1"] if method == "score" else []
    main = importlib.import_module(f"train.{method}").main
    one_error_line(*cli(main, argv, capsys), f"{method} runs in one process, under DDP or under DeepSpeed, not under FSDP")
    assert not (tmp_path / "o").exists()


def test_push_to_hub_reaches_the_trainer_config(tmp_path, monkeypatch):
    from train.run import parse_training
    from train.sft import config_types as sft_config_types

    argv = ["--dataset_path", "x.jsonl", "--output_dir", str(tmp_path), "--push_to_hub", "true", "--hub_model_id", "me/adapter"]
    with pytest.raises(UserError, match="push_to_hub needs the network but HF_HUB_OFFLINE is set"):
        parse_training(sft_config_types(), argv, "t")  # before training, not in a traceback after it
    monkeypatch.delenv("HF_HUB_OFFLINE")
    setup, args, cfg = parse_training(sft_config_types(), argv, "t")
    assert cfg.push_to_hub is True and cfg.hub_model_id == "me/adapter" and setup.data.dataset_path == "x.jsonl"


def test_model_card_names_hub_inputs_by_their_ids(tmp_path):
    """Hub inputs are hub ids in the card's front matter (the hub links base_model and datasets)."""
    from types import SimpleNamespace

    from selfcorrect.config import DataConfig, OverwriteConfig, TaskConfig
    from train.outputs import model_card
    from train.run import Setup, TrainConfig

    data = tmp_path / "data"
    data.mkdir()
    (data / "config.json").write_text(json.dumps({"task": "bbq", "dataset_path": None, "split": "test"}))
    model = SimpleNamespace(
        model_name_or_path="Qwen/Qwen2.5-1.5B-Instruct",
        use_peft=True,
        load_in_4bit=False,
        lora_r=16,
        lora_alpha=32,
        lora_target_modules=["all-linear"],
    )
    setup = Setup(model, DataConfig(dataset_path=str(data / "sft.jsonl")), TaskConfig(), TrainConfig(), OverwriteConfig())
    card = model_card("sft", "cross-entropy", setup, str(tmp_path / "out"), {})
    front = card.split("---")[1]
    assert "base_model: Qwen/Qwen2.5-1.5B-Instruct" in front and "datasets:\n- oskarvanderwal/bbq" in front
    setup.model.model_name_or_path = "smollm2-135m-instruct"  # the embedded demo model is that hub model's weights
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in model_card("sft", "x", setup, str(tmp_path / "o"), {})


@pytest.mark.parametrize(
    "module, key, value, choices",
    [
        ("train.sft", "train_on", "everything", "correct_turns, final_turn, all_assistant"),
        ("train.grpo", "first_attempt", "offline", "on_policy, trace"),
        ("train.kround", "reward_mode", "best", "final, sum, convergence"),
        ("train.score", "report_to", "tensorboard", "none, wandb"),
    ],
)
def test_a_choice_outside_its_literal_is_one_line_from_a_flag_and_from_a_recipe(module, key, value, choices, tmp_path, capsys):
    """Choices are typed (``Literal``): a flag and a recipe key outside them get the same kind of line."""
    import importlib

    main = importlib.import_module(module).main
    base = ["--dataset_path", str(tmp_path / "none.jsonl"), "--output_dir", str(tmp_path / "o")]
    one_error_line(*cli(main, [*base, f"--{key}", value], capsys), f"{key} must be one of {choices} (got '{value}')")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"{key}: {value}\n")
    one_error_line(
        *cli(main, [*base, "--config", str(recipe)], capsys), f"recipe key '{key}' must be one of {choices} (got '{value}')"
    )


def test_a_finished_command_destroys_its_process_group_and_a_failed_one_leaves_it(one_rank_group, capsys):  # noqa: F811
    """After success the group is destroyed while Python is fully alive (its worker threads joined;
    test_multiprocess.py shows the abort this prevents). After an error it is left to the launcher:
    destroying it waits for the group's queued work, which other ranks may never complete."""
    import torch
    import torch.distributed as dist

    run_cli(lambda argv: dist.all_reduce(torch.ones(2), async_op=True), [])
    assert not dist.is_initialized()

    dist.init_process_group("gloo")

    def fails(argv):
        raise UserError("a bad option")

    assert cli(fails, [], capsys) == (2, "error: a bad option\n")
    assert dist.is_initialized()
