"""Merge a LoRA adapter into its base model.

python -m train.merge --base <model> --adapter <dir> --out <dir>
"""

from dataclasses import dataclass, field

from selfcorrect.config import parse_config
from selfcorrect.errors import UserError, run_cli
from selfcorrect.modeling import merge_adapter


@dataclass
class MergeConfig:
    base: str = field(default="", metadata={"help": "Base model (hub id, folder or smollm2-135m-instruct)."})
    adapter: str = field(default="", metadata={"help": "Adapter folder written by train/<method>.py."})
    out: str = field(default="", metadata={"help": "Output folder for the merged model."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the hub."})

    def __post_init__(self) -> None:
        missing = [f"--{k}" for k in ("base", "adapter", "out") if not getattr(self, k)]
        if missing:
            raise UserError(f"train.merge needs {', '.join(missing)}")


def main(argv: list[str]) -> None:
    (a,) = parse_config([MergeConfig], argv, prog="python -m train.merge")
    merge_adapter(a.base, a.adapter, a.out, a.trust_remote_code)


if __name__ == "__main__":
    run_cli(main)
