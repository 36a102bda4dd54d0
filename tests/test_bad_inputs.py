"""Inputs a new user gets wrong, each through the real command: one error line naming the file, the
key and what was expected (or what to change), exit code 2, and nothing written."""

import contextlib
import json
import os

import pytest
from helpers import run_command


def one_line(p, *parts):
    """Exit 2, one stderr line holding every part, and no traceback."""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    assert lines and lines[-1].startswith("error: "), p.stderr[-2000:]
    for part in parts:
        assert part in lines[-1], (part, lines[-1])
    return lines[-1]


def data_gen(tmp_path, *args):
    out = tmp_path / "out"
    p = run_command("data_gen.__main__", ["--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(out), *args])
    return p, out


# ---- class 3: typed values, duplicate keys, placeholders ----------------------------------------


PROMPT_SETS = [
    ("version: [1]\n  review_instruction: again", "key 'version' must be int (got [1])"),
    ("version: v2\n  review_instruction: again", "key 'version' must be int (got 'v2')"),
    ("review_instruction: {text: again}", "key 'review_instruction' must be str (got {'text': 'again'})"),
    ("review_instruction: again\n  first_prefill: [The answer is]", "key 'first_prefill' must be str | None"),
    ("review_instruction: again\n  external: yes please", "key 'external' must be bool (got 'yes please')"),
    (
        "review_instruction: 'You said {answer}. {feedback}'",
        "key 'review_instruction' has placeholder {answer}, which no round fills (it fills {feedback})",
    ),
    ("review_instruction: again\n  first_instruction: 'Be fair to {group}.'", "has placeholder {group}, which no round fills"),
    ("review_instruction: again\n  review_instruction: twice", ":3:3: not valid YAML: duplicate key 'review_instruction'"),
]


@pytest.mark.parametrize("body,expected", PROMPT_SETS)
def test_a_prompt_set_value_of_the_wrong_type_is_one_line_naming_file_and_key(tmp_path, body, expected):
    sets = tmp_path / "sets.yaml"
    sets.write_text(f"mine:\n  {body}\n")
    p, out = data_gen(tmp_path, "--task", "gsm8k", "--prompt_set", "mine", "--prompt_sets_file", str(sets))
    one_line(p, str(sets), expected)
    assert not out.exists()


GOOD_SPEC = {"prompt_template": '"Q: {q}"', "gold_field": "a", "answer_regex": '"is (.+)"'}
SPECS = [
    ({"prompt_template": "{q: text}"}, "key 'prompt_template' must be str (got {'q': 'text'})"),
    ({"gold_field": "5"}, "key 'gold_field' must be str (got 5)"),
    ({"answer_regex": None, "choices": "[yes, no]"}, "key 'choices' must be list[str | int | float] (got [True, False])"),
    ({"name": "[a, b]"}, "key 'name' must be str (got ['a', 'b'])"),
    ({"prompt_template": '"Q: {q.text}"'}, "prompt_template placeholder {q.text} must be a field name of the rows"),
    ({"prompt_template": '"Q: {0}"'}, "prompt_template placeholder {0} must be a field name of the rows"),
    ({"prompt_template": '"Q: {q"'}, "prompt_template is not a valid template (expected '}' before end of string"),
]


def write_spec(path, changes=None, extra_line=""):
    spec = {**GOOD_SPEC, **(changes or {})}
    path.write_text("".join(f"{k}: {v}\n" for k, v in spec.items() if v is not None) + extra_line)
    return path


@pytest.mark.parametrize("changes,expected", SPECS)
def test_a_task_spec_value_of_the_wrong_type_is_one_line_naming_file_and_key(tmp_path, changes, expected):
    spec = write_spec(tmp_path / "task.yaml", changes)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"q": "2+2?", "a": "4"}) + "\n")
    p, out = data_gen(tmp_path, "--task", str(spec), "--prompt_set", "cot", "--dataset_path", str(rows))
    one_line(p, str(spec), expected)
    assert not out.exists()


def test_a_duplicate_key_in_a_task_spec_is_refused_not_last_one_wins(tmp_path):
    spec = write_spec(tmp_path / "task.yaml", extra_line='prompt_template: "A: {a}"\n')
    p, out = data_gen(tmp_path, "--task", str(spec), "--prompt_set", "cot", "--dataset_path", str(tmp_path / "rows.jsonl"))
    one_line(p, f"{spec}:4:1: not valid YAML: duplicate key 'prompt_template' (first given on line 1)")
    assert not out.exists()


@pytest.mark.parametrize(
    "row,expected",
    [
        ('{"q": "2+2?", "a": "4", "a": "5"}', ":1: key 'a' is given twice in one row (JSON keeps only the last)"),
        ('{"q": "2+2?", "a": {"value": 4}}', ":1: gold field 'a' must be text or a number (got dict {'value': 4})"),
        ('{"q": "2+2?", "a": true}', ":1: gold field 'a' must be text or a number (got bool True)"),
        ('{"id": [7], "q": "2+2?", "a": "4"}', ":1: id field 'id' must be text or an integer (got list [7])"),
    ],
)
def test_a_dataset_row_of_the_wrong_shape_is_one_line_naming_file_line_and_key(tmp_path, row, expected):
    spec = write_spec(tmp_path / "task.yaml")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(row + "\n")
    from selfcorrect.errors import UserError
    from selfcorrect.tasks import get_task

    with pytest.raises(UserError) as e:
        list(get_task(str(spec)).load(str(rows)))
    assert str(e.value) == f"{rows}{expected}"


def test_a_recipe_names_its_file_in_type_errors_and_refuses_a_duplicate_key(tmp_path):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("rounds: [3]\n")
    p, out = data_gen(tmp_path, "--config", str(recipe))
    one_line(p, f"{recipe}: recipe key 'rounds' must be int (got [3])")
    recipe.write_text("rounds: 2\ntemperature: 0.0\nrounds: 5\n")
    p, out = data_gen(tmp_path, "--config", str(recipe))
    one_line(p, f"{recipe}:3:1: not valid YAML: duplicate key 'rounds' (first given on line 1)")
    assert not out.exists()


# ---- an adapter trained by the real command, its base and output in folders with spaces and non-ASCII


@pytest.fixture(scope="module")
def trained(tiny_model_dir, bbq_dir, tmp_path_factory):
    """An SFT adapter trained for one step on a copy of the tiny model, everything in folders whose
    names a shell splits (spaces) or a naive quoting mangles (non-ASCII), and the data_gen config
    beside the training file that names a local dataset (so the card's eval command runs offline)."""
    import shutil

    from helpers import PS, make_trace

    from data_gen.build import sft_rows
    from selfcorrect.tasks import get_task

    root = tmp_path_factory.mktemp("inputs")
    base = root / "base model ü"
    shutil.copytree(tiny_model_dir, base)
    data_dir = root / "données d'essai"
    data_dir.mkdir()
    bbq_copy = root / "bbq release (copy)"
    shutil.copytree(bbq_dir, bbq_copy)
    (data_dir / "config.json").write_text(json.dumps({"task": "bbq", "dataset_path": str(bbq_copy), "split": "test"}))
    rows = [r for i in range(4) for r in sft_rows(make_trace(f"Age/{i}", ["A", "C"]), get_task("bbq"), PS, {"final_correct"})]
    (data_dir / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "my adapter ü"
    p = run_command(
        "train.sft",
        [
            "--model_name_or_path", str(base), "--dataset_path", str(data_dir / "sft.jsonl"), "--output_dir", str(out),
            "--max_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none", "--save_steps", "100",
        ],
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return {"root": root, "base": base, "adapter": out, "bbq": bbq_copy}


def eval_args(trained, model, adapter, out):
    return [
        "--model_name_or_path", str(model), "--adapter", str(adapter), "--dataset_path", str(trained["bbq"]),
        "--rounds", "1", "--limit", "1", "--max_new_tokens", "2", "--output_dir", str(out),
    ]  # fmt: skip


# ---- class 5: identity by content ----------------------------------------------------------------


def test_a_retrained_adapter_with_the_same_weights_keeps_its_identity(tmp_path):
    """What a training run writes beside the weights (training_args.bin, its config, run.json)
    differs between two runs that trained the same weights: it is not the adapter's identity."""
    from selfcorrect.run_identity import model_identity

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, run in ((first, b"run one"), (second, b"run two, other output_dir and time")):
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        (folder / "adapter_config.json").write_text('{"r": 8}')
        (folder / "training_args.bin").write_bytes(run)
        (folder / "selfcorrect_config.json").write_text(json.dumps({"output_dir": str(folder)}))
        (folder / "run.json").write_text(json.dumps({"command": "sft", "settings": {"out": str(folder)}}))
    assert model_identity(str(first)) == model_identity(str(second))
    (second / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}     x")
    assert model_identity(str(first)) != model_identity(str(second))


def test_an_adapters_base_is_matched_by_content_in_any_folder(trained, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere" / "the same base"
    shutil.copytree(trained["base"], moved)
    out = tmp_path / "eval"
    p = run_command("eval.__main__", eval_args(trained, moved, trained["adapter"], out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "metrics.json").is_file()


def test_an_adapter_applied_to_another_base_under_its_recorded_name_is_refused(trained, tmp_path):
    """The adapter names a folder that now holds another model of the same shapes: PEFT would load
    it silently; the recorded content tells them apart."""
    import shutil

    from tiny_model import build

    other = build(str(tmp_path / "other base"), seed=1)
    adapter = tmp_path / "adapter copy"
    shutil.copytree(trained["adapter"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": other}))
    out = tmp_path / "eval"
    p = run_command("eval.__main__", eval_args(trained, other, adapter, out))
    one_line(p, f"adapter {adapter} was trained on a base whose config and weights differ from {other}'s")
    assert not (out / "traces.jsonl").exists()


# ---- class 6: commands the project prints run as printed ------------------------------------------


def test_the_model_cards_eval_command_runs_as_printed_with_spaces_and_non_ascii(trained):
    """The card's command is run by a shell exactly as printed (a few small-run options appended):
    every path in it has spaces or non-ASCII letters."""
    import re
    import subprocess
    import sys

    from helpers import LAUNCH_ENV, ROOT

    card = (trained["adapter"] / "README.md").read_text(encoding="utf-8")
    (command,) = re.findall(r"```bash\n(python -m eval .*)\n```", card)
    env = {**os.environ, **LAUNCH_ENV, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    p = subprocess.run(
        ["bash", "-c", command + " --limit 1 --max_new_tokens 2"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((trained["adapter"] / "eval" / "metrics.json").read_text())
    assert metrics["run"]["rounds"] == 5


def test_advice_naming_a_base_folder_quotes_it(trained, tmp_path):
    """The 'pass --model_name_or_path ...' advice for an adapter without a content record."""
    import shlex
    import shutil

    from tiny_model import build

    other = build(str(tmp_path / "another model"), seed=1)
    adapter = tmp_path / "adapter"
    shutil.copytree(trained["adapter"], adapter)
    (adapter / "base_model.json").unlink()
    p = run_command("eval.__main__", eval_args(trained, other, adapter, tmp_path / "eval"))
    line = one_line(p, f"was trained on {trained['base']}, not on {other}")
    advice = line.split(": pass ", 1)[1]
    assert shlex.split(advice) == ["--model_name_or_path", str(trained["base"])]


# ---- class 4: inputs that cannot play their role ---------------------------------------------------


def test_a_model_without_a_classification_head_is_refused_as_a_classifier(tiny_model_dir, tmp_path):
    """A causal LM loads as a classifier with a new, random head and scores noise."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say something."}) + "\n")
    out = tmp_path / "out"
    p = run_command(
        "data_gen.__main__",
        ["--model_name_or_path", tiny_model_dir, "--task", "toxicity", "--classifier", tiny_model_dir, "--prompt_set", "cot",
         "--dataset_path", str(prompts), "--rounds", "1", "--max_new_tokens", "2", "--output_dir", str(out)],
    )  # fmt: skip
    arch = json.loads(open(os.path.join(tiny_model_dir, "config.json")).read())["architectures"][0]
    one_line(p, f"classifier {tiny_model_dir} is a {arch}, which has no classification head")
    assert not out.exists()


def test_an_output_folder_inside_the_dataset_folder_is_refused(tiny_model_dir, bbq_dir, tmp_path):
    import shutil

    data = tmp_path / "bbq"
    shutil.copytree(bbq_dir, data)
    before = sorted(os.listdir(data))
    for out in (data, data / "runs" / "first"):
        p = run_command(
            "data_gen.__main__",
            ["--model_name_or_path", tiny_model_dir, "--dataset_path", str(data), "--rounds", "1", "--limit", "1",
             "--max_new_tokens", "2", "--output_dir", str(out)],
        )  # fmt: skip
        one_line(p, f"--output_dir {out} is (inside) the --dataset_path folder {data}, which this run reads")
    assert sorted(os.listdir(data)) == before


def test_a_data_gen_folder_given_as_training_data_names_the_file_meant(trained, tmp_path):
    data_dir = trained["root"] / "données d'essai"
    out = tmp_path / "sft"
    p = run_command(
        "train.sft",
        [
            "--model_name_or_path",
            str(trained["base"]),
            "--dataset_path",
            str(data_dir),
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
        ],
    )
    one_line(
        p, f"{data_dir} is a folder; a data_gen output file (.jsonl) is expected here: did you mean {data_dir / 'sft.jsonl'}?"
    )
    assert not out.exists()


def test_a_run_compared_with_itself_is_refused(trained, tmp_path):
    run = tmp_path / "eval"
    p = run_command("eval.__main__", eval_args(trained, trained["base"], trained["adapter"], run))
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "compare"
    for runs in ([run, run], [run, run / "metrics.json"]):
        p = run_command("eval.compare", ["--runs", *map(str, runs), "--labels", "a", "b", "--output_dir", str(out)])
        one_line(p, f"--runs names the run {run} twice", "a run compared with itself has no difference to test")
    assert not out.exists()


# ---- class 7: failures underneath ------------------------------------------------------------------


def test_a_dpo_max_length_that_leaves_no_pair_is_one_line(trained, tmp_path):
    from helpers import PS, make_trace

    from data_gen.build import dpo_rows_in_trace
    from selfcorrect.tasks import get_task

    rows = [r for i in range(4) for r in dpo_rows_in_trace(make_trace(f"Age/{i}", ["C", "A"]), get_task("bbq"), PS, {"switched"})]
    data = tmp_path / "dpo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dpo"
    p = run_command(
        "train.dpo",
        ["--model_name_or_path", str(trained["base"]), "--dataset_path", str(data), "--output_dir", str(out),
         "--max_length", "4", "--max_steps", "1", "--report_to", "none"],
    )  # fmt: skip
    one_line(p, f"max_length 4 leaves no DPO pair of {data} to train on", f"each of its {len(rows)} prompts", "raise max_length")
    assert not (out / "adapter_model.safetensors").exists() and not list(out.glob("checkpoint-*"))


@pytest.fixture
def vllm_stub(monkeypatch):
    """The names generate_ids imports from vLLM, for a machine without it (the engine is a fake)."""
    import sys
    import types

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)

    module("vllm", SamplingParams=lambda **kw: kw)
    module("vllm.inputs", TokensPrompt=lambda **kw: kw)
    module("vllm.sampling_params", MAX_LOGPROB_TOKEN_IDS=128)


class EngineDeadError(Exception):
    """vLLM's exception (vllm.v1.engine.exceptions) when its engine core process dies."""


def test_a_vllm_engine_that_dies_is_one_line_naming_what_to_change(tiny_model_dir, vllm_stub, capsys):
    """Mocked: the CPU build's engine core dies at the first request (no attention kernel for the
    model's head size) and the parent gets EngineDeadError, without the cause or with it chained."""
    from transformers import AutoTokenizer

    from selfcorrect.cli import run_cli
    from selfcorrect.vllm_backend import VLLMGenerator

    class DeadEngine:
        def __init__(self, cause):
            self.cause = cause

        def generate(self, *args, **kwargs):
            try:
                raise RuntimeError(self.cause)
            except RuntimeError as e:
                raise EngineDeadError("EngineCore encountered an issue. See stack trace (above) for the root cause.") from e

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for cause, expected in (
        (
            "Unsupported CPU attention configuration: head_dim=16 isa=1",
            "vLLM's CPU attention has no kernel for this model's head_dim=16",
        ),
        ("worker crashed", "the vLLM engine stopped (EngineDeadError: EngineCore encountered an issue."),
    ):
        gen = VLLMGenerator(tiny_model_dir, tok, llm=DeadEngine(cause))
        with pytest.raises(SystemExit) as e:
            run_cli(lambda argv, gen=gen: gen.generate_ids([[1, 2, 3]]), [])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: {expected}") and "--generation_backend hf runs the same rounds without vLLM" in err, err


def test_a_cpu_vllm_engine_is_not_started_on_a_head_size_it_has_no_kernel_for(tiny_model_dir, tmp_path, monkeypatch):
    from tiny_model import build

    from selfcorrect import vllm_backend
    from selfcorrect.errors import UserError

    started = []
    monkeypatch.setattr(vllm_backend, "cuda_available", lambda: False)
    monkeypatch.setattr(vllm_backend, "_ENGINES", {})
    monkeypatch.setitem(__import__("sys").modules, "vllm", type("vllm", (), {"LLM": lambda **kw: started.append(kw)}))
    with pytest.raises(UserError, match=r"^vLLM's CPU attention has no kernel for head_dim=16 \("):
        vllm_backend.start_engine(tiny_model_dir)
    assert started == []
    vllm_backend.start_engine(build(str(tmp_path / "heads of 32"), num_heads=2))  # the tier's model starts
    assert len(started) == 1


def finished_run(tiny_model_dir, bbq_dir, out):
    return run_command(
        "eval.__main__",
        ["--model_name_or_path", tiny_model_dir, "--dataset_path", bbq_dir, "--rounds", "2", "--limit", "2",
         "--max_new_tokens", "2", "--output_dir", str(out)],
    )  # fmt: skip


@contextlib.contextmanager
def read_only(folder):
    """``folder`` read-only for the block: a read-only bind mount as root (root writes through file
    modes), its mode otherwise."""
    import subprocess

    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder read-only here (root, and no mount)")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
            assert not os.access(folder, os.W_OK)
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True)
    else:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)


def files(folder):
    return {f: (folder / f).read_bytes() for f in os.listdir(folder) if (folder / f).is_file()}


def test_a_finished_run_in_a_read_only_folder_is_nothing_to_do(tiny_model_dir, bbq_dir, tmp_path):
    out = tmp_path / "eval"
    p = finished_run(tiny_model_dir, bbq_dir, out)
    assert p.returncode == 0, p.stderr[-3000:]
    before = files(out)
    with read_only(out):
        p = finished_run(tiny_model_dir, bbq_dir, out)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stderr.strip().splitlines()[-1] == f"note: {out} already holds this run, finished, and is read-only: nothing to do"
    assert files(out) == before


def test_a_finished_merge_in_a_read_only_folder_is_nothing_to_do(trained, tmp_path):
    out = tmp_path / "merged"
    args = ["--base", str(trained["base"]), "--adapter", str(trained["adapter"]), "--out", str(out)]
    p = run_command("train.merge", args)
    assert p.returncode == 0, p.stderr[-3000:]
    before = files(out)
    with read_only(out):
        p = run_command("train.merge", args)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stderr.strip().splitlines()[-1] == f"note: {out} already holds this merge, finished, and is read-only: nothing to do"
    assert files(out) == before


SECOND_CTRL_C = """
import atexit, os, signal, sys, time
from selfcorrect.cli import run_cli
from selfcorrect.errors import Interrupted

# A command run from a terminal gets Ctrl-C; one started in the background by a non-interactive shell
# (a CI script's `... &`) inherits SIGINT ignored, and Python then installs no handler. Restore it.
signal.signal(signal.SIGINT, signal.default_int_handler)

def shutting_down():  # the user presses Ctrl-C again while the process exits
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)

def main(argv):
    atexit.register(shutting_down)
    try:
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, in the middle of the work
        time.sleep(10)
    except KeyboardInterrupt:
        if argv == ["resumable"]:
            raise Interrupted("finished batches are saved in out; re-run the same command to resume") from None
        raise

run_cli(main, sys.argv[1:])
"""


@pytest.mark.parametrize("kind", ["plain", "resumable"])
def test_a_second_ctrl_c_during_shutdown_prints_no_traceback(kind):
    import subprocess
    import sys

    from helpers import LAUNCH_ENV

    p = subprocess.run(
        [sys.executable, "-c", SECOND_CTRL_C, kind], env={**os.environ, **LAUNCH_ENV}, capture_output=True, text=True, timeout=60
    )
    expected = (
        "interrupted: finished batches are saved in out; re-run the same command to resume"
        if kind == "resumable"
        else "interrupted"
    )
    assert p.returncode == 130 and p.stderr.strip() == expected, p.stderr
