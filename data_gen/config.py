"""data_gen's own options (the shared ones are in selfcorrect/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data_gen.build import DPO_SOURCES, SFT_SOURCES
from selfcorrect.errors import UserError


@dataclass
class DataGenConfig:
    """Which SFT conversations and DPO pairs are built from the traces."""

    sft_sources: list[str] = field(
        default_factory=lambda: ["final_correct", "improving"],
        metadata={"help": f"SFT conversations to keep: {', '.join(SFT_SOURCES)}."},
    )
    dpo_sources: list[str] = field(
        default_factory=lambda: ["switched", "improved", "samples"],
        metadata={"help": f"DPO pair kinds to build: {', '.join(DPO_SOURCES)}."},
    )

    def __post_init__(self) -> None:
        for name, values, valid in (
            ("sft_sources", self.sft_sources, SFT_SOURCES),
            ("dpo_sources", self.dpo_sources, DPO_SOURCES),
        ):
            bad = [v for v in values if v not in valid]
            if bad:
                raise UserError(f"{name}: unknown value(s) {', '.join(bad)}; valid: {', '.join(valid)}")
