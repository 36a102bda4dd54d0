"""Loading a task's community dataset from the Hugging Face hub (only when online).

Offline (HF_HUB_OFFLINE=1) the user gets one line asking for --dataset_path instead of a long
network traceback. The hub path is not exercised by the test suite, which runs without network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from selfcorrect.errors import UserError


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def load_hub_rows(hub_id: str, split: str, config: str | None = None) -> Iterator[dict[str, Any]]:
    if hub_offline():
        raise UserError(f"HF_HUB_OFFLINE is set: pass --dataset_path (a local file) instead of the hub dataset {hub_id}")
    from datasets import load_dataset

    try:
        ds = load_dataset(hub_id, config, split=split, streaming=True)
    except Exception as e:  # network, missing split, gated dataset: one line for the user
        raise UserError(f"could not load hub dataset {hub_id} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    yield from ds
