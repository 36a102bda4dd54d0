"""Merge a LoRA adapter into its base model.

python -m train.merge --base <model> --adapter <dir> --out <dir>
"""

import glob
import os
from dataclasses import dataclass, field

from selfcorrect.cli import run_cli
from selfcorrect.config import OverwriteConfig
from selfcorrect.errors import NothingToDo, UserError
from selfcorrect.modeling import merge_adapter
from selfcorrect.parsing import parse_config
from selfcorrect.run_identity import check_outside_inputs, check_run, model_identity

# What a merge writes into --out (deleted by --overwrite, with run.json saying a merge wrote them).
MERGE_OUTPUTS = [
    "model*.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "chat_template.jinja",
]


@dataclass
class MergeConfig:
    """What to merge."""

    base: str = field(default="", metadata={"help": "Base model (hub id, folder or smollm2-135m-instruct)."})
    adapter: str = field(default="", metadata={"help": "Adapter folder written by train/<method>.py."})
    out: str = field(default="", metadata={"help": "Output folder for the merged model."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the hub."})

    def __post_init__(self) -> None:
        missing = [f"--{k}" for k in ("base", "adapter", "out") if not getattr(self, k)]
        if missing:
            raise UserError(f"train.merge needs {', '.join(missing)}")


def main(argv: list[str]) -> None:
    a, ow = parse_config([MergeConfig, OverwriteConfig], argv, prog="python -m train.merge", description=__doc__)
    check_outside_inputs(a.out, {"--base": a.base, "--adapter": a.adapter}, "--out")
    settings = {"base": a.base, "base_weights": model_identity(a.base), "adapter_weights": model_identity(a.adapter)}
    resumed = check_run(a.out, "train.merge", settings, MERGE_OUTPUTS, ow.overwrite)
    # The same merge, finished, in a folder this process cannot write: merging again would fail on the
    # first write (a writable folder's finished merge is merged again, as before).
    finished = glob.glob(os.path.join(a.out, "model*.safetensors")) and os.path.isfile(os.path.join(a.out, "config.json"))
    if resumed and finished and not os.access(a.out, os.W_OK):
        raise NothingToDo(f"{a.out} already holds this merge, finished, and is read-only: nothing to do")
    merge_adapter(a.base, a.adapter, a.out, a.trust_remote_code, base_option="--base")


def cli() -> None:
    """The console command (pyproject.toml's [project.scripts])."""
    run_cli(main)


if __name__ == "__main__":
    cli()
