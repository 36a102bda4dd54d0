"""BBQ from a repository laid out like the hub mirror (data/<Category>.jsonl), read by the same code
that reads the hub: the hub itself is not reachable from the test machines."""

import json
import os
import shutil

import pytest
from conftest import fixture

from selfcorrect.errors import UserError
from selfcorrect.tasks import get_task
from selfcorrect.tasks.bbq import CATEGORIES, HUB_ID, HUB_REVISION, hub_base, load_repo


@pytest.fixture()
def repo(tmp_path):
    """The fixture cut in the mirror's layout, with its All.jsonl (every category again) and loading script."""
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for folder in (fixture("bbq"), fixture("bbq", "generated")):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".jsonl") and "prediction" not in name:
                shutil.copy(os.path.join(folder, name), data / name)
                rows += open(os.path.join(folder, name)).read().splitlines()
    (data / "All.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "bbq.py").write_text("raise SystemExit('the loading script must not run')\n")
    return tmp_path, rows


def test_repo_layout_loads_each_category_once(repo):
    folder, rows = repo
    exs = list(load_repo(str(folder)))
    want = [(lambda d: f"{d['category']}/{d['example_id']}")(json.loads(r)) for r in rows]
    assert sorted(e.id for e in exs) == sorted(want)
    assert len(exs) == 356 + 5 * 40 and len({e.fields["category"] for e in exs}) == 11
    local = {e.id: e for e in get_task("bbq").load(fixture("bbq"))}
    assert {e.id: e for e in exs if e.id in local} == local  # the same examples as from the release files
    # the task accepts such a folder as --dataset_path too
    assert [e.id for e in get_task("bbq").load(str(folder))] == [e.id for e in exs]


def test_hub_location_and_offline_message(monkeypatch):
    assert len(CATEGORIES) == 11 and HUB_ID == "oskarvanderwal/bbq" and get_task("bbq").hub_id == HUB_ID
    assert hub_base() == f"hf://datasets/oskarvanderwal/bbq@{HUB_REVISION}" and len(HUB_REVISION) == 40
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set: pass --dataset_path"):
        list(get_task("bbq").load(None))


def test_repo_with_a_bad_row_is_a_one_line_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "Age.jsonl").write_text(json.dumps({"example_id": 0, "category": "Age"}) + "\n")
    with pytest.raises(UserError, match=r"data/Age.jsonl:1: BBQ row lacks field\(s\) context"):
        list(load_repo(str(tmp_path)))
    with pytest.raises(UserError, match="no BBQ data/<Category>.jsonl files in"):
        list(load_repo(str(tmp_path / "data")))
