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
