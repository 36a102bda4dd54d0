import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
sys.path.insert(0, os.path.join(ROOT, "tests"))


FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def shared(*parts: str) -> str:
    """A full release file from the development machines' data folder; the test is skipped where it
    is absent (a fresh clone)."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"full data release not present ({os.path.join(*parts)}; tests/fixtures holds small cuts of it)")
    return path


def fixture(*parts: str) -> str:
    """A file or folder under tests/fixtures (small cuts of the releases, shipped with the repository)."""
    path = os.path.join(FIXTURES, *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: rebuild it with tests/fixtures/make_fixtures.py")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tiny_model import build

    return build(str(tmp_path_factory.mktemp("tiny-chat")))


@pytest.fixture(scope="session")
def bbq_dir():
    return fixture("bbq")


@pytest.fixture(scope="session")
def rl_file(tmp_path_factory):
    """RL rows of four BBQ items (data_gen's rl_row of hand-built traces)."""
    import json

    from helpers import PS, make_trace

    from data_gen.build import rl_row

    path = tmp_path_factory.mktemp("rl") / "rl.jsonl"
    answers = [["A", "C"], ["C", "C"], ["B", "A"], ["C", "B"]]
    path.write_text("".join(json.dumps(rl_row(make_trace(f"Age/{i}", a), PS)) + "\n" for i, a in enumerate(answers)))
    return str(path)


@pytest.fixture(scope="session")
def toy_rl_file(tmp_path_factory):
    """RL rows of the test-only task whose reward (even response length) varies between samples, so
    the policy gradient is not zero and the sampled tokens decide the update."""
    from selfcorrect.tasks.base import Example

    path = tmp_path_factory.mktemp("toy-rl") / "rl.jsonl"
    rows = [
        {
            "id": str(i),
            "task": "even_length",
            "prompt_set": "intrinsic",
            "example": json.dumps(Example(id=str(i), question=f"Say something number {i}.", gold="even").to_dict()),
        }
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
