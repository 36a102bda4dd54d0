"""Every command line tests/test_gpu.py launches parses, here on the CPU: the launcher's options
through accelerate's own parser, and the script's options through the entry point's parser as it
runs on CUDA (no CPU overrides), with every config's checks. Nothing is launched or loaded."""

import os
from unittest import mock

import pytest
from conftest import ROOT
from gpu_cases import Case, data_gen_args, extra_cases, matrix_cases

CASES = {**matrix_cases("tiny-model", "gpu-data", "out"), **extra_cases("tiny-model", "gpu-data", "out")}


def parse_launch(case: Case):
    """accelerate launch's parse of a case: the config file exists and the script's arguments are
    handed over whole, not taken as launcher options."""
    from accelerate.commands.launch import launch_command_parser

    config = os.path.join(ROOT, "accelerate_configs", f"{case.config}.yaml")
    assert os.path.isfile(config), config
    ns = launch_command_parser().parse_args([*case.launcher_args, "--config_file", config, case.target, *case.args])
    assert ns.training_script == case.target and ns.training_script_args == case.args
    return ns


def parse_entry_point(case: Case):
    """The entry point's own parse, as on a CUDA machine: ``device_overrides`` would turn bf16 off
    on this CPU machine and hide an option the GPU run passes."""
    import importlib

    from train.run import parse_training

    module = importlib.import_module(case.target.removesuffix(".py").replace("/", "."))
    with (
        mock.patch("train.run.cuda_available", return_value=True),
        mock.patch("transformers.training_args.is_torch_bf16_gpu_available", return_value=True),
    ):
        return parse_training(module.config_types(), list(case.args), prog=case.target)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_case_parses(name):
    case = CASES[name]
    parse_launch(case)
    setup, *method_cfgs = parse_entry_point(case)
    assert setup.model.dtype == "bfloat16"
    assert method_cfgs[-1].max_steps == 2
    if name.endswith("-2gpu"):
        assert parse_launch(case).num_processes == 2
    if name == "sft-qlora":
        assert setup.model.load_in_4bit
    if name == "kround-gradient_checkpointing":
        assert method_cfgs[-1].gradient_checkpointing


def test_the_extra_gpu_cases_are_there():
    """Issue 36, item 10: two processes (DDP and ZeRO-3), QLoRA, the online loop with gradient
    checkpointing; the matrix alone had none of them."""
    assert {"kround-ddp-2gpu", "grpo-zero3-2gpu", "sft-qlora", "kround-gradient_checkpointing"} <= set(CASES)


def test_gpu_data_gen_command_parses():
    import importlib

    from selfcorrect.parsing import parse_config

    dg = importlib.import_module("data_gen.__main__")
    objs = parse_config(dg.CONFIG_TYPES, data_gen_args("tiny-model", "bbq", "out"))
    assert any(getattr(o, "rounds", None) == 2 for o in objs)
