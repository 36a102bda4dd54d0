"""Traces -> SFT / DPO / RL rows, and the rows pass through TRL's own tokenisation."""

import json

from helpers import PS, make_trace

from data_gen.build import build_all, dpo_rows_in_trace, rl_row, sft_rows
from selfcorrect.tasks import get_task

TASK = get_task("bbq")


def test_sft_sources():
    improving = make_trace("Age/1", ["A", "C", "C"])  # wrong -> right -> right
    rows = sft_rows(improving, TASK, PS, {"final_correct", "improving", "rationalised"})
    by = {r["source"]: r["messages"] for r in rows}
    assert len(by["final_correct"]) == 6 and by["final_correct"][-1]["content"].endswith("Can't be determined")
    assert len(by["improving"]) == 4  # up to the first wrong -> right revision
    rat = by["rationalised"]
    assert [m["role"] for m in rat] == ["user", "assistant", "user", "assistant"]
    assert rat[1]["content"] == PS.first_prefill + " A. The grandfather"
    assert rat[3]["content"] == PS.review_prefill + " C. Can't be determined"
    assert sft_rows(make_trace("Age/2", ["C", "A"]), TASK, PS, {"final_correct", "improving"}) == []


def test_dpo_pairs_in_trace():
    t = make_trace("Age/3", ["C", "A", "A"])  # right -> wrong (switched), then wrong -> wrong
    rows = dpo_rows_in_trace(t, TASK, PS, {"switched", "improved", "rationalised"})
    sw = [r for r in rows if r["source"] == "switched"]
    assert len(sw) == 1 and sw[0]["round"] == 2
    assert sw[0]["chosen"][0]["content"] == PS.review_prefill + " C. Can't be determined"
    assert sw[0]["rejected"][0]["content"] == PS.review_prefill + " A. The grandfather"
    assert [m["role"] for m in sw[0]["prompt"]] == ["user", "assistant", "user"]
    assert sw[0]["prompt"][-1]["content"] == PS.review_turn()
    rat = [r for r in rows if r["source"] == "rationalised"]
    assert len(rat) == 1 and rat[0]["round"] == 3 and "Can't be determined" in rat[0]["chosen"][0]["content"]
    imp = dpo_rows_in_trace(make_trace("Age/4", ["B", "C"]), TASK, PS, {"improved"})
    assert imp[0]["chosen"][0]["content"].endswith("Can't be determined")
    assert imp[0]["rejected"][0]["content"] == PS.review_prefill + " B. The grandson"


def test_dpo_across_samples_and_rl_rows():
    a = make_trace("Age/5", ["C", "C"], sample=0)
    b = make_trace("Age/5", ["A", "A"], sample=1)
    out = list(build_all([a, b], TASK, PS, ["final_correct"], ["samples"]))
    kinds = [k for k, _ in out]
    assert kinds.count("rl") == 1 and kinds.count("sft") == 1
    (pair,) = [r for k, r in out if k == "dpo"]
    assert pair["round"] == 1 and pair["chosen"][0]["content"].endswith("determined")
    rl = rl_row(a, PS)
    assert rl["prompt"][-1] == {"role": "assistant", "content": PS.first_prefill}
    assert rl["revision_prompt"][-1] == {"role": "assistant", "content": PS.review_prefill}
    assert rl["first_correct"] and json.loads(rl["example"])["gold"] == "C"


def test_rows_pass_trl_tokenisation(tiny_model_dir, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    traces = [make_trace("Age/6", ["A", "C", "C"]), make_trace("Age/7", ["C", "A"])]
    files = {"sft": tmp_path / "sft.jsonl", "dpo": tmp_path / "dpo.jsonl"}
    with open(files["sft"], "w") as fs, open(files["dpo"], "w") as fd:
        for kind, row in build_all(traces, TASK, PS, ["final_correct", "improving"], ["switched", "improved"]):
            {"sft": fs, "dpo": fd}.get(kind, open("/dev/null", "w")).write(json.dumps(row) + "\n")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sft = load_dataset("json", data_files=str(files["sft"]), split="train")
    common = dict(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to=[], max_steps=1)
    t = SFTTrainer(model=model, args=SFTConfig(**common, assistant_only_loss=True), train_dataset=sft, processing_class=tok)
    row = t.train_dataset[0]
    assert sum(x != -100 for x in row["labels"]) > 0 and sum(x == -100 for x in row["labels"]) > 0
    dpo = load_dataset("json", data_files=str(files["dpo"]), split="train")
    d = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=dpo, processing_class=tok)
    assert len(d.train_dataset) == len(dpo) == 2


def _cot_trace(answers):
    """A trace made with intrinsic-moral-cot: round 1 starts with a reasoning prefill, round 2 has none."""
    from selfcorrect.prompts import get_prompt_set

    cot = get_prompt_set("intrinsic-moral-cot")
    t = make_trace("Age/9", answers)
    for r, rnd in enumerate(t.rounds):
        rnd.prefill = cot.prefill(r)
        rnd.response = f" Both could be. The answer is {answers[r]}."
    return t, cot


def test_dpo_pairs_present_an_earlier_response_with_its_own_prefill_when_the_round_has_none():
    t, cot = _cot_trace(["C", "A"])  # right -> wrong: keeping round 1's answer is chosen at round 2
    (sw,) = dpo_rows_in_trace(t, TASK, cot, {"switched"})
    # Round 1's response continues "Let's think about ..."; round 2 has no prefill, so the kept answer
    # is round 1's whole turn, not a continuation shown as an answer.
    assert cot.first_prefill and cot.review_prefill is None
    assert sw["chosen"][0]["content"] == cot.first_prefill + " Both could be. The answer is C."
    assert sw["rejected"][0]["content"] == " Both could be. The answer is A."
    t, cot = _cot_trace(["A", "C"])
    (imp,) = dpo_rows_in_trace(t, TASK, cot, {"improved"})
    assert imp["rejected"][0]["content"] == cot.first_prefill + " Both could be. The answer is A."


def test_gold_stable_and_self_consistent_sources():
    t = make_trace("Age/5", ["A", "B", "C"])  # wanders: wrong, wrong, right (gold C)
    by = {r["source"]: r for r in sft_rows(t, TASK, PS, {"gold_stable", "self_consistent"})}
    gold, own = by["gold_stable"], by["self_consistent"]
    assert [m["content"] for m in gold["messages"][1::2]] == [
        PS.first_prefill + " C. Can't be determined",
        PS.review_prefill + " C. Can't be determined",
        PS.review_prefill + " C. Can't be determined",
    ]
    # The model's own round-1 answer (wrong here), kept at every round after that round's prefill, and trained.
    assert [m["content"] for m in own["messages"][1::2]] == [
        PS.first_prefill + " A. The grandfather",
        PS.review_prefill + " A. The grandfather",
        PS.review_prefill + " A. The grandfather",
    ]
    assert own["train_turns"] == gold["train_turns"] == [True, True, True]
    assert own["prefills"] == [PS.first_prefill, PS.review_prefill, PS.review_prefill]
    assert [m["content"] for m in own["messages"][0::2]] == [r.user for r in t.rounds]
    # With a reasoning prefill in round 1 only, later rounds repeat round 1's whole turn.
    t, cot = _cot_trace(["A", "B"])
    (row,) = sft_rows(t, TASK, cot, {"self_consistent"})
    assert [m["content"] for m in row["messages"][1::2]] == [cot.first_prefill + " Both could be. The answer is A."] * 2
    assert row["prefills"] == [cot.first_prefill, None]
