"""SCoRe and K-round RL, like the TRL trainers, name their wandb run and push the finished folder
to the hub when asked (the hub client is replaced by a recorder: no network in tests)."""

import json
import os

import pytest
from helpers import PS, make_trace

from data_gen.build import rl_row


@pytest.mark.slow  # a whole (2-step) K-round RL run
def test_kround_pushes_its_folder_and_names_its_run(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class Recorder:
        def create_repo(self, repo_id, exist_ok=False):
            calls.append(("create_repo", repo_id, exist_ok))

        def upload_folder(self, repo_id, folder_path, ignore_patterns=None):
            calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path)), ignore_patterns))

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    # The push goes to the stand-in client above; the suite runs with HF_HUB_OFFLINE=1, which the
    # trainers rightly refuse for a real push, so this test alone lifts it (everything else is local).
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    data = tmp_path / "rl.jsonl"
    data.write_text(
        "".join(json.dumps(rl_row(make_trace(f"Age/{i}", a), PS)) + "\n" for i, a in enumerate([["A", "C"], ["C", "C"]]))
    )
    from train.kround import main

    out = tmp_path / "kround"
    argv = ["--model_name_or_path", tiny_model_dir, "--dataset_path", str(data), "--output_dir", str(out), "--max_steps", "1"]
    argv += ["--per_device_prompts", "2", "--num_generations", "2", "--rounds", "2", "--max_new_tokens", "4"]
    main([*argv, "--push_to_hub", "true", "--hub_model_id", "me/kround-test", "--run_name", "k2"])
    create, upload = calls
    assert create == ("create_repo", "me/kround-test", True)
    assert upload[1] == "me/kround-test" and "adapter_model.safetensors" in upload[2] and "README.md" in upload[2]
    assert "checkpoint-*" in upload[3]
    assert json.load(open(out / "selfcorrect_config.json"))["run_name"] == "k2"


def test_wandb_run_name_reaches_init_trackers():
    from train.outputs import wandb_init_kwargs

    assert wandb_init_kwargs("k2") == {"wandb": {"name": "k2"}} and wandb_init_kwargs(None) == {}
