"""What every command promises a user: it knows what run a folder holds, its saved config re-runs it,
wrong values fail before any work, and every mistake is one `error:` line with exit code 2.

Most cases run the entry points in-process through ``run_cli`` (what ``python -m ...`` runs), so a
case costs milliseconds; a few run the real command line.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, fixture

from selfcorrect.errors import run_cli


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

COMMANDS = [
    ("python -m data_gen", ["-m", "data_gen"]),
    ("python -m eval", ["-m", "eval"]),
    ("python -m eval.external", ["-m", "eval.external"]),
    ("python -m eval.compare", ["-m", "eval.compare"]),
    ("python -m train.merge", ["-m", "train.merge"]),
    ("train/sft.py", ["train/sft.py"]),
    ("train/dpo.py", ["train/dpo.py"]),
    ("train/grpo.py", ["train/grpo.py"]),
    ("train/score.py", ["train/score.py"]),
    ("train/kround.py", ["train/kround.py"]),
]


@pytest.mark.parametrize("prog, args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_has_help(prog, args):
    p = subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith(f"usage: {prog}") and "--config" in p.stdout and "__main__" not in p.stdout


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


def test_non_utf8_recipe_and_bad_task_spec_regex(tmp_path, capsys):
    bad = tmp_path / "r.yaml"
    bad.write_bytes(b"rounds: 2\n\xff\xfe\n")
    one_error_line(*cli(data_gen_main(), ["--config", str(bad)], capsys), "not a UTF-8 text file")
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
    one_error_line(*cli(dpo, [*common, "--dataset_path", f"{data}/dpo.jsonl"], capsys), "holds a 'train/sft' run")
    one_error_line(
        *cli(sft, [*common, "--dataset_path", f"{data}/sft.jsonl", "--learning_rate", "1e-3"], capsys), "learning_rate"
    )
    card = open(os.path.join(out, "README.md")).read()
    assert card.startswith("---\nbase_model: ") and "library_name: peft" in card
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
    import train.common as common
    from train.sft import main as sft

    monkeypatch.setattr(common, "load_policy", lambda *a, **k: pytest.fail("the model loaded before the check"))
    rows = tmp_path / "sft.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    code, err = cli(sft, ["--dataset_path", str(rows), "--output_dir", str(tmp_path / "o"), "--max_steps", "1", *args], capsys)
    one_error_line(code, err, needle)


def test_training_data_made_for_another_task_is_refused(tmp_path, capsys):
    from train.grpo import main as grpo

    rows = tmp_path / "rl.jsonl"
    rows.write_text(json.dumps({"id": "Age/0", "task": "bbq", "prompt_set": "cot", "example": "{}"}) + "\n")
    code, err = cli(
        grpo, ["--dataset_path", str(rows), "--task", "gsm8k", "--prompt_set", "cot", "--output_dir", str(tmp_path / "o")], capsys
    )
    one_error_line(code, err, "data was made with task 'bbq' but the recipe says 'gsm8k'")


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
    saved["classifier"] = None
    (tmp_path / "again.json").write_text(json.dumps(saved))
    assert cli(data_gen_main(), ["--config", str(tmp_path / "again.json"), "--output_dir", str(tmp_path / "dg2")], capsys)[0] == 0
    ev = str(tmp_path / "ev")
    assert cli(eval_main(), [*args[:-2], "--output_dir", ev, "--rounds", "2", "--n_boot", "10"], capsys)[0] == 0
    assert cli(eval_main(), ["--config", os.path.join(ev, "config.json")], capsys)[0] == 0  # resumes its own run


def test_config_redaction_is_by_name_and_value(monkeypatch):
    from dataclasses import dataclass

    from selfcorrect.config import config_to_dict

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


def test_push_to_hub_reaches_the_trainer_config(tmp_path):
    from trl import SFTConfig

    from train.common import parse_training
    from train.sft import SFTArgs

    setup, args, cfg = parse_training(
        [SFTArgs, SFTConfig],
        ["--dataset_path", "x.jsonl", "--output_dir", str(tmp_path), "--push_to_hub", "true", "--hub_model_id", "me/adapter"],
        "t",
    )
    assert cfg.push_to_hub is True and cfg.hub_model_id == "me/adapter" and setup.data.dataset_path == "x.jsonl"
