"""The vLLM backend against the HF engine (the `vllm` tier: bash scripts/test_vllm.sh runs it in .venv-vllm).

Skipped where vLLM does not import (the default .venv). One engine per model for the whole module:
starting one takes minutes on a CPU, and ``start_engine`` hands the same engine to the commands that
run in this process.

Tolerances: both backends compute in float32 on the CPU, with different kernels (vLLM's attention
and fused layers against transformers' eager ones), so log-probabilities differ by rounding only;
option probabilities are compared to 1e-3 absolute, mean log-probabilities to 1e-3. Greedy decoding
can still part where two tokens are within rounding of each other: the answers must agree on at least
99% of rounds, and the failure lists the rounds that differ.
"""

import json
import math
import os

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

# A small KV cache (GiB) on the CPU build: the machine is shared and the test models are small.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from conftest import fixture
from helpers import run_command

from selfcorrect.device import cuda_available
from selfcorrect.jsonl import read_rows
from selfcorrect.modeling import load_model, load_tokenizer
from selfcorrect.prompts import get_prompt_set
from selfcorrect.rollout import HFGenerator, SamplingConfig, run_rounds
from selfcorrect.tasks import get_task
from selfcorrect.vllm_backend import VLLMGenerator, start_engine

PROB_TOL = 1e-3
AGREE = 0.99


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """The tiny random model with 2 heads of 32 dimensions (vLLM's CPU attention has no 16)."""
    from tiny_model import build

    return build(str(tmp_path_factory.mktemp("tiny-vllm")), num_heads=2)


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    """The tiny model's engine; the commands below run in this process with the same settings and
    get it from ``start_engine`` too."""
    return start_engine(tiny_model_dir)


def _examples(n):
    task = get_task("bbq")
    exs = []
    for ex in task.load(fixture("bbq")):
        exs.append(ex)
        if len(exs) == n:
            break
    return task, exs


def _broad_labels(g, width=40):
    """``width`` token ids count as each option's label tokens, so the random tiny model generates
    label tokens at about a quarter of its steps (3 x 40 of 512) and the option distributions get
    compared there; 3 x 40 stays within the 128 ids vLLM scores per request."""
    spans = {lab: range(3 + k * width, 3 + (k + 1) * width) for k, lab in enumerate("ABC")}
    g.label_token_ids = lambda label: list(spans[label])


def _disagreements(hf, vl, what):
    """Rounds where ``what(round)`` differs, as 'id r<k>: hf=... vllm=...'."""
    out = []
    for a, b in zip(hf, vl, strict=True):
        assert (a.id, a.sample) == (b.id, b.sample)
        for k, (ra, rb) in enumerate(zip(a.rounds, b.rounds, strict=True)):
            if what(ra) != what(rb):
                out.append(f"{a.id} r{k + 1}: hf={what(ra)!r} vllm={what(rb)!r}")
    return out


def _assert_agree(hf, vl):
    n = sum(len(t.rounds) for t in hf)
    differ = _disagreements(hf, vl, lambda r: r.answer)
    assert len(differ) <= (1 - AGREE) * n, f"answers differ in {len(differ)} of {n} rounds:\n" + "\n".join(differ)
    return n, differ


def test_greedy_rounds_agree_with_hf_engine(tiny_model_dir, tiny_engine):
    """Same examples, same prompts, K = 3 greedy rounds: the vLLM backend's rounds are the HF engine's
    (same contexts token for token, same responses, answers, stop and token counts, option
    distributions at every generated label token within PROB_TOL)."""
    task, exs = _examples(16)
    ps = get_prompt_set("intrinsic-moral")
    tok = load_tokenizer(tiny_model_dir)
    sampling = SamplingConfig(max_new_tokens=16)
    hf = HFGenerator(load_model(tiny_model_dir, device="cpu"), tok, sampling, batch_size=8)
    vl = VLLMGenerator(tiny_model_dir, tok, sampling, llm=tiny_engine)
    steps = {}
    for name, g in (("hf", hf), ("vllm", vl)):
        _broad_labels(g)
        rec = []
        orig = g.generate
        g.generate = lambda prompts, *a, orig=orig, rec=rec, **k: rec.append(orig(prompts, *a, **k)) or rec[-1]
        steps[name] = (run_rounds(g, task, ps, exs, rounds=3).trajectories, rec)
    (t_hf, g_hf), (t_vl, g_vl) = steps["hf"], steps["vllm"]
    _assert_agree(t_hf, t_vl)
    differ = _disagreements(t_hf, t_vl, lambda r: (r.response, r.finish, r.new_tokens))
    assert not differ, "\n".join(differ)
    compared = 0
    for round_hf, round_vl in zip(g_hf, g_vl, strict=True):
        for a, b in zip(round_hf, round_vl, strict=True):
            assert a.prompt_ids == b.prompt_ids and a.token_ids == b.token_ids
            assert b.mean_logprob == pytest.approx(a.mean_logprob, abs=PROB_TOL)
            assert [(o.step, o.label) for o in a.option_steps] == [(o.step, o.label) for o in b.option_steps]
            for oa, ob in zip(a.option_steps, b.option_steps):
                assert ob.probs is not None, "every label token's log-probability was requested"
                assert all(abs(oa.probs[k] - ob.probs[k]) <= PROB_TOL for k in oa.probs), (oa.probs, ob.probs)
                assert abs(oa.mass - ob.mass) <= PROB_TOL
                compared += 1
    assert compared > 50  # the comparison saw label positions
    assert vl.label_steps == compared and vl.label_steps_absent == 0


def test_smollm2_greedy_rounds_agree_with_hf_engine():
    """The real SmolLM2-135M-Instruct (answers that end at <|im_end|>, letters with option
    probabilities): 32 BBQ items x K = 3 greedy rounds; answers agree on >= 99% of rounds, and where
    both read option probabilities at the same label token they agree within PROB_TOL."""
    from selfcorrect.modeling import SMOLLM2_ALIAS, resolve_model_path

    path = resolve_model_path(SMOLLM2_ALIAS)  # converts the embedded GGUF once if not cached
    task, exs = _examples(32)
    ps = get_prompt_set("intrinsic-moral")
    tok = load_tokenizer(SMOLLM2_ALIAS)
    sampling = SamplingConfig(max_new_tokens=24)
    hf = run_rounds(
        HFGenerator(load_model(SMOLLM2_ALIAS, device="cpu"), tok, sampling, batch_size=16), task, ps, exs, 3
    ).trajectories
    vl = run_rounds(VLLMGenerator(path, tok, sampling, llm=start_engine(path)), task, ps, exs, 3).trajectories
    n, _ = _assert_agree(hf, vl)
    with_probs = 0
    for a, b in zip(hf, vl):
        for ra, rb in zip(a.rounds, b.rounds):
            assert rb.finish in ("eos", "length")
            if ra.response == rb.response and ra.option_probs is not None:
                assert rb.option_probs is not None and rb.option_step == ra.option_step
                assert all(abs(ra.option_probs[k] - rb.option_probs[k]) <= PROB_TOL for k in ra.option_probs)
                assert abs(ra.option_mass - rb.option_mass) <= PROB_TOL
                with_probs += 1
    assert with_probs >= n // 2  # SmolLM2 answers with a letter after the prefill in most rounds
    assert any(r.finish == "eos" for t in vl for r in t.rounds)


def test_option_probs_absent_not_zero_beyond_vllm_label_limit(tiny_model_dir, tiny_engine):
    """Labels with more tokens than vLLM scores per request (3 x 170 > 128): the distribution at a
    label token is unknown, recorded as absent (None) and counted, never filled with zeros."""
    task, exs = _examples(4)
    tok = load_tokenizer(tiny_model_dir)
    vl = VLLMGenerator(tiny_model_dir, tok, SamplingConfig(max_new_tokens=16), llm=tiny_engine)
    _broad_labels(vl, width=170)
    gens = vl.generate([vl.render([{"role": "user", "content": ex.question}]) for ex in exs], [["A", "B", "C"]] * len(exs))
    steps = [o for g in gens for o in g.option_steps]
    assert steps and all(o.probs is None and o.mass is None for o in steps)
    assert vl.label_steps == vl.label_steps_absent == len(steps)
    assert all(g.option_probs is None for g in gens)


def _cli(module, model, out, backend, extra=()):
    args = ["--model_name_or_path", model, "--dataset_path", fixture("bbq"), "--limit", "12", "--max_new_tokens", "12"]
    args += ["--output_dir", str(out), "--batch_size", "5", "--generation_backend", backend, *extra]
    p = run_command(module, args)
    assert p.returncode == 0, p.stderr
    return p


def close(a, b):
    """Equal JSON values, floats within PROB_TOL."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, abs_tol=PROB_TOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b


def _same_rows(path_hf, path_vl):
    """Two traces.jsonl files hold the same rows: equal except floats within PROB_TOL."""
    hf, vl = list(read_rows(path_hf)), list(read_rows(path_vl))
    assert [(r["id"], r["sample"]) for r in hf] == [(r["id"], r["sample"]) for r in vl]
    differ = [f"{a['id']}: {json.dumps(a)}\n  vs {json.dumps(b)}" for a, b in zip(hf, vl) if not close(a, b)]
    assert not differ, "\n".join(differ)


def test_sampled_trajectories_do_not_depend_on_batching(tiny_model_dir, tiny_engine):
    """At temperature 1 each request's seed is keyed by the run's seed, its example, its sample index
    and the round: a subset of the examples (a shard, the rest of a resumed run, another batch) or
    another order samples the same tokens for the same (example, sample)."""
    task, exs = _examples(6)
    ps = get_prompt_set("intrinsic-moral")
    tok = load_tokenizer(tiny_model_dir)
    vl = VLLMGenerator(tiny_model_dir, tok, SamplingConfig(max_new_tokens=8, temperature=1.0, seed=7), llm=tiny_engine)

    def sample(examples):
        trajs = run_rounds(vl, task, ps, examples, rounds=2, samples=2).trajectories
        return {(t.id, t.sample): [r.response for r in t.rounds] for t in trajs}

    whole = sample(exs)
    assert len({tuple(v) for v in whole.values()}) == len(whole)  # every trajectory sampled its own tokens
    assert {**sample(exs[0::2]), **sample(exs[1::2])} == whole
    assert {**sample(exs[:1]), **sample(exs[1:4]), **sample(exs[4:])} == whole
    assert sample(exs[::-1]) == whole


def test_data_gen_and_eval_write_the_same_files(tiny_model_dir, tiny_engine, tmp_path):
    """`python -m data_gen` / `python -m eval` with --generation_backend vllm write the files the HF
    path writes, with the same rows; run.json records the backend and its version, and a re-run of
    the vLLM command resumes (nothing left to do) while an HF re-run into that folder is refused."""
    import vllm

    for module, files in (
        ("data_gen.__main__", ["traces.jsonl", "sft.jsonl", "dpo.jsonl", "rl.jsonl", "README.md"]),
        ("eval.__main__", ["traces.jsonl", "metrics.json", "report.md", "accuracy.png"]),
    ):
        out = {b: tmp_path / f"{module}-{b}" for b in ("hf", "vllm")}
        for backend, folder in out.items():
            _cli(module, tiny_model_dir, folder, backend, ["--n_boot", "20"] if module.startswith("eval") else [])
        assert sorted(os.listdir(out["hf"])) == sorted(os.listdir(out["vllm"]))
        for f in files:
            assert (out["vllm"] / f).exists(), f
        _same_rows(out["hf"] / "traces.jsonl", out["vllm"] / "traces.jsonl")
        for f in files[1:]:
            if f.endswith(".jsonl"):
                assert (out["hf"] / f).read_text() == (out["vllm"] / f).read_text(), f
        settings = json.loads((out["vllm"] / "run.json").read_text())["settings"]
        assert settings["generation_backend"] == "vllm" and settings["vllm_version"] == vllm.__version__
        assert "generation_backend" not in json.loads((out["hf"] / "run.json").read_text())["settings"]
        p = _cli(module, tiny_model_dir, out["vllm"], "vllm", ["--n_boot", "20"] if module.startswith("eval") else [])
        assert "resuming" in p.stderr
        refused = run_command(
            module,
            ["--model_name_or_path", tiny_model_dir, "--dataset_path", fixture("bbq")]
            + ["--limit", "12", "--max_new_tokens", "12", "--output_dir", str(out["vllm"]), "--batch_size", "5"],
        )
        assert refused.returncode == 2 and "generation_backend" in refused.stderr
    m_hf = json.loads((out["hf"] / "metrics.json").read_text())
    m_vl = json.loads((out["vllm"] / "metrics.json").read_text())
    for key in ("headline", "per_round", "convergence"):
        assert close(m_hf[key], m_vl[key]), (key, m_hf[key], m_vl[key])


def test_data_gen_resumes_after_kill_9_losing_at_most_the_batch_in_flight(tiny_model_dir, tiny_engine, tmp_path):
    """`python -m data_gen --generation_backend vllm` killed with SIGKILL (engine process included)
    once a batch is on disk, then run again: every batch written before the kill is kept as it was,
    the re-run resumes after them, and the finished file holds every id once with all its rounds,
    the rows of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    args = ["--model_name_or_path", tiny_model_dir, "--dataset_path", fixture("bbq"), "--limit", "20", "--rounds", "2"]
    args += ["--max_new_tokens", "12", "--batch_size", "4", "--generation_backend", "vllm"]
    out, whole = tmp_path / "killed", tmp_path / "whole"
    shard = out / "shards" / "rank0.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_gen", *args, "--output_dir", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the engine core runs in a child process: the kill takes the group
    )
    deadline = time.time() + 900  # the engine starts in the child first (minutes on a loaded CPU)
    while time.time() < deadline and proc.poll() is None and not (shard.exists() and shard.stat().st_size > 0):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert shard.exists() and shard.stat().st_size > 0, "no batch was written before the kill"
    before = [json.loads(line) for line in shard.read_text().splitlines() if line.endswith("}")]
    assert 0 < len(before) < 20
    p = run_command("data_gen.__main__", [*args, "--output_dir", str(out)])
    assert p.returncode == 0, p.stderr
    assert f"resuming: {len(before)} trajectories" in p.stderr  # only the batch in flight was lost
    rows = list(read_rows(str(out / "traces.jsonl")))
    assert len({r["id"] for r in rows}) == len(rows) == 20
    assert all(len(r["rounds"]) == 2 for r in rows)
    by_id = {r["id"]: r for r in rows}
    assert all(close(by_id[r["id"]], r) for r in before)  # kept as written
    p = run_command("data_gen.__main__", [*args, "--output_dir", str(whole)])
    assert p.returncode == 0, p.stderr
    _same_rows(str(whole / "traces.jsonl"), str(out / "traces.jsonl"))


@pytest.mark.skipif(cuda_available(), reason="the CPU build's attention kernels")
def test_a_head_size_without_a_cpu_kernel_is_one_line_before_the_engine_starts(tmp_path):
    """The CPU build has no attention kernel for 16-dimension heads: its engine would start (minutes),
    then die at the first request with an EngineDeadError and the core's traceback."""
    from tiny_model import build

    model = build(str(tmp_path / "heads of 16"), num_heads=4)
    out = tmp_path / "out"
    p = run_command(
        "data_gen.__main__",
        ["--model_name_or_path", model, "--generation_backend", "vllm", "--dataset_path", fixture("bbq"), "--limit", "1",
         "--rounds", "1", "--output_dir", str(out)],
    )  # fmt: skip
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert lines[-1].startswith("error: vLLM's CPU attention has no kernel for head_dim=16 ("), lines[-1]
    assert "--generation_backend hf runs the same rounds without vLLM" in lines[-1]
    assert "starting a vLLM engine" not in p.stderr and not (out / "traces.jsonl").exists()


def test_stopped_conversations_stop_at_the_same_round_in_both_engines(tiny_model_dir, tiny_engine):
    """stop_when stable: each engine is asked only for the conversations still running, and both
    stop every conversation at the same round with the same rounds before it."""
    from test_stopping import LengthTask

    from selfcorrect.rollout import StopRule
    from selfcorrect.tasks.base import Example

    exs = [Example(id=str(i), question=f"question {i} " + "word " * i, gold="0") for i in range(12)]
    tok = load_tokenizer(tiny_model_dir)
    sampling = SamplingConfig(max_new_tokens=7)
    out = {}
    for name, g in (
        ("hf", HFGenerator(load_model(tiny_model_dir, device="cpu"), tok, sampling, batch_size=4)),
        ("vllm", VLLMGenerator(tiny_model_dir, tok, sampling, llm=tiny_engine)),
    ):
        g.eos_ids = g.eos_ids + list(range(100, 140))  # rows end at different steps, so answers differ
        rows = []
        orig = g.generate
        g.generate = lambda prompts, *a, orig=orig, rows=rows, **k: rows.append(len(prompts)) or orig(prompts, *a, **k)
        trajs = run_rounds(
            g, LengthTask(), get_prompt_set("intrinsic-moral"), exs, rounds=4, stop=StopRule("stable", 1)
        ).trajectories
        out[name] = trajs
        assert sum(rows) == sum(t.rounds_run() for t in trajs)  # no decoding for stopped rows
    assert [t.stop_round for t in out["hf"]] == [t.stop_round for t in out["vllm"]]
    assert any(t.stop_round for t in out["hf"]) and any(t.rounds_run() > 2 for t in out["hf"])
    differ = _disagreements(out["hf"], out["vllm"], lambda r: (r.response, r.carried))
    assert not differ, "\n".join(differ)
