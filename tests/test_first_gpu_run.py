"""What would break or silently degrade the first run on CUDA (issue 36), checked on the CPU: a
1-rank gloo group, bf16 tensors, mocks at the library boundary, the tiny model. Each test failed on
the code before its fix."""

import datetime
import glob
import os
import socket

import pytest
from helpers import online_trainer, run_command

from selfcorrect.errors import UserError

# ---- the process group's timeout -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_process_group_is_created_with_the_timeout(monkeypatch):
    """A real 1-rank gloo group, made as accelerate makes it under ``accelerate launch`` (its env
    variables): the timeout reaches ``init_process_group``. Without it NCCL's 10-minute default
    applies, and TrainingArguments' ``ddp_timeout`` is ignored (the group exists before them)."""
    import torch.distributed as dist
    from accelerate import PartialState

    from selfcorrect.device import process_state

    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {
        **env,
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }.items():
        monkeypatch.setenv(key, value)  # restored after the test (accelerate writes some of them itself)
    seen = {}
    real = dist.init_process_group

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(dist, "init_process_group", spy)
    assert not dist.is_initialized()
    PartialState._reset_state()
    try:
        state = process_state(timeout_s=4321)
        assert dist.is_initialized() and state.num_processes == 1
        assert seen["timeout"] == datetime.timedelta(seconds=4321)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        PartialState._reset_state()


class _Stop(UserError):
    pass


@pytest.mark.parametrize(
    "module, target, extra",
    [
        ("data_gen.__main__", "selfcorrect.trace_run.process_state", ["--dataset_path", "BBQ"]),
        ("eval.__main__", "selfcorrect.trace_run.process_state", ["--dataset_path", "BBQ"]),
        ("train.sft", "train.run.process_state", ["--dataset_path", "x.jsonl"]),
    ],
)
def test_every_command_creates_its_group_with_ddp_timeout(module, target, extra, bbq_dir, tmp_path, monkeypatch):
    """The first ``process_state`` of each command gets ``--ddp_timeout`` (the test stops it there).
    data_gen and eval default to a day: their only collectives are the barriers at the start and
    the end, and after a resume the ranks' remaining shares differ, so the first to finish waits
    at the last barrier for the rest."""
    from unittest import mock

    calls = []

    def spy(timeout_s=None):
        calls.append(timeout_s)
        raise _Stop("stopped by the test")

    extra = [bbq_dir if a == "BBQ" else a for a in extra]
    with mock.patch(target, spy):
        p = run_command(module, [*extra, "--output_dir", str(tmp_path / "out"), "--ddp_timeout", "1234"])
        assert "stopped by the test" in p.stderr, p.stderr
        p = run_command(module, [*extra, "--output_dir", str(tmp_path / "out2")])
    default = 1800 if module.startswith("train") else 86400  # TrainingArguments' default; a day (above)
    assert calls == [1234, default]


def test_online_loop_creates_its_group_with_ddp_timeout(rl_file, tmp_path):
    from unittest import mock

    calls = []

    def spy(timeout_s=None):
        calls.append(timeout_s)
        raise _Stop("stopped by the test")

    trainer = online_trainer("kround", ["--dataset_path", rl_file, "--output_dir", str(tmp_path), "--ddp_timeout", "99"])
    with mock.patch("train.run.process_state", spy), pytest.raises(_Stop):
        trainer._setup_run()
    assert calls == [99]


# ---- online-loop checkpoints -----------------------------------------------------------------


def test_online_checkpoint_holds_no_frozen_base_weight(tiny_model_dir, rl_file, tmp_path):
    """A SCoRe / K-round RL checkpoint holds the adapter, the optimizer, the schedule and the RNG
    states: ``accelerator.save_state`` on a PeftModel also wrote the whole base (about 15 GB per
    checkpoint for a 7B model). Resuming from such a checkpoint is tested in test_online_rl.py."""
    import torch
    from safetensors.torch import load_file

    from train.kround import main

    out = tmp_path / "run"
    main(
        [
            *("--model_name_or_path", tiny_model_dir, "--dataset_path", rl_file, "--output_dir", str(out)),
            *("--max_steps", "2", "--save_steps", "1", "--per_device_prompts", "2", "--num_generations", "2"),
            *("--rounds", "2", "--max_new_tokens", "4"),
        ]
    )
    ckpt = out / "checkpoint-1"
    files = set(os.listdir(ckpt))
    weights = {f: load_file(ckpt / f) for f in files if f.endswith((".safetensors", ".bin")) and "model" in f}
    assert set(weights) == {"adapter_model.safetensors"}, sorted(files)
    assert weights["adapter_model.safetensors"] and all("lora_" in k for k in weights["adapter_model.safetensors"])
    assert {
        "optimizer.bin",
        "custom_checkpoint_0.pkl",
        "random_states_0.pkl",
        "online_rl_state.json",
    } <= files  # the schedule: custom_checkpoint_0
    optimizer = torch.load(ckpt / "optimizer.bin", weights_only=False)
    assert len(optimizer["state"]) == len(weights["adapter_model.safetensors"])  # the trainable weights' state only


# ---- "the weights never moved" ---------------------------------------------------------------


def test_weights_moved_compares_in_the_training_dtype():
    """Under DeepSpeed bf16 the engine casts the LoRA weights to bf16, so they always differed from
    the fp32 snapshot taken before training, and a run that learnt nothing was never reported."""
    import torch

    from train.outputs import trainable_snapshot, weights_moved

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    model[0].requires_grad_(False)  # frozen, like a LoRA base
    snapshot = trainable_snapshot(model)
    model.to(torch.bfloat16)  # what the engine does, with no update
    assert weights_moved(model, snapshot) is False
    with torch.no_grad():
        model[1].weight[0, 0] += 0.5  # one update bf16 can represent
    assert weights_moved(model, snapshot) is True
    model.float()
    assert weights_moved(model, snapshot) is True


# ---- QLoRA -------------------------------------------------------------------------------------


def _qlora_load(argv, cuda_bf16: bool):
    """parse_training and load_policy as on a CUDA machine (bf16 or not), with transformers'
    from_pretrained replaced: returns the keyword arguments the model would load with."""
    from unittest import mock

    import train.sft
    from selfcorrect.modeling import load_policy
    from train.run import parse_training

    with (
        mock.patch("train.run.cuda_available", return_value=True),
        mock.patch("selfcorrect.modeling.cuda_available", return_value=True),
        mock.patch("torch.cuda.is_bf16_supported", return_value=cuda_bf16),
        mock.patch("transformers.training_args.is_torch_bf16_gpu_available", return_value=True),
        mock.patch("transformers.AutoModelForCausalLM.from_pretrained", return_value="model") as load,
    ):
        setup, _, _ = parse_training(train.sft.config_types(), [*argv, "--dataset_path", "x.jsonl"], prog="test")
        load_policy(setup.model)
    return load.call_args.kwargs


@pytest.mark.parametrize("dtype", [[], ["--dtype", "auto"]])
def test_qlora_without_a_dtype_computes_in_bf16_where_cuda_has_it(dtype, tiny_model_dir, capsys):
    """``--dtype auto`` ended in a traceback (TRL passes the name to bitsandbytes: getattr(torch,
    "auto")), and no dtype computed in fp32 (TRL's default), twice the memory of bf16."""
    import torch

    argv = ["--model_name_or_path", tiny_model_dir, "--load_in_4bit", "true", *dtype]
    kwargs = _qlora_load(argv, cuda_bf16=True)
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["dtype"] == torch.bfloat16
    assert "QLoRA computes in bfloat16" in capsys.readouterr().err
    kwargs = _qlora_load(argv, cuda_bf16=False)  # a GPU without bf16 (before Ampere): fp32, as before
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype == torch.float32
    kwargs = _qlora_load([*argv, "--dtype", "float16"], cuda_bf16=True)  # a dtype set is kept
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype == torch.float16


def test_qlora_under_zero3_is_refused_by_name():
    """It failed only by accident, deep in transformers, with an error about device_map.
    (parse_training runs this check; under a real DeepSpeed launch it parses, which an in-process
    test without the launcher's process group cannot.)"""
    from train.run import check_quantized_launch

    zero = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    with pytest.raises(UserError, match="QLoRA .* ZeRO-3.*zero2.yaml"):
        check_quantized_launch(True, zero)
    check_quantized_launch(False, zero)  # LoRA under ZeRO-3 is fine
    check_quantized_launch(True, {**zero, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"})  # whole 4-bit weights per rank
    check_quantized_launch(True, {})


# ---- the 7-8B recipes ---------------------------------------------------------------------------

LARGE_RL_RECIPES = sorted(
    p
    for model in ("qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3")
    for p in glob.glob(os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", model, "*", "*.yaml"))
    if os.path.basename(p) in ("grpo.yaml", "score.yaml", "kround.yaml")
)


@pytest.mark.parametrize("path", LARGE_RL_RECIPES, ids=[p.split("recipes/")[1] for p in LARGE_RL_RECIPES])
def test_large_rl_recipes_use_a_lora_learning_rate_and_state_their_memory(path):
    """LoRA at 5e-6 barely moves an adapter whose B starts at zero: TRL's LoRA Without Regret guide
    trains GRPO with LoRA (all-linear, alpha 32) at 1e-5, ten times its full fine-tuning rate. Each
    recipe says the memory it needs, so a user picks the GPU before the run, not after an OOM."""
    import yaml

    with open(path) as f:
        text = f.read()
    recipe = yaml.safe_load(text)
    assert recipe["use_peft"] and 1e-5 <= float(recipe["learning_rate"]) <= 1e-4
    assert any(line.startswith("# memory") for line in text.splitlines()), "no '# memory' note"


# ---- full fine-tuning in bf16 ------------------------------------------------------------------


def test_full_fine_tuning_with_16bit_weights_is_refused_naming_memory():
    """AdamW on bf16 weights has no fp32 master copy: an update smaller than a bf16 step (lr 1e-5
    on a weight near 1: the step there is 2^-7) rounds away, and nothing warns."""
    from train.run import check_full_fine_tuning

    with pytest.raises(UserError, match=r"fp32 master.*16 bytes per parameter.*use_peft true"):
        check_full_fine_tuning(False, "bfloat16", {})
    check_full_fine_tuning(False, "float32", {})  # master weights in fp32 (bf16 autocast computes)
    check_full_fine_tuning(True, "bfloat16", {})  # LoRA: the adapter is fp32 (PEFT casts it)
    check_full_fine_tuning(False, "bfloat16", {"ACCELERATE_USE_DEEPSPEED": "true"})  # DeepSpeed keeps fp32 masters


def test_the_trainers_run_the_full_fine_tuning_check(tiny_model_dir):
    import train.sft
    from train.run import parse_training

    argv = ["--model_name_or_path", tiny_model_dir, "--use_peft", "false", "--dtype", "bfloat16", "--dataset_path", "x"]
    from unittest import mock

    with (
        mock.patch("train.run.cuda_available", return_value=True),
        mock.patch("transformers.training_args.is_torch_bf16_gpu_available", return_value=True),
        pytest.raises(UserError, match="fp32 master"),
    ):
        parse_training(train.sft.config_types(), argv, prog="test")


# ---- FSDP through the TRL trainers ---------------------------------------------------------------


def test_a_run_is_never_marked_finished_without_its_adapter(tmp_path):
    """Under FSDP with SHARDED_STATE_DICT, transformers' Trainer.save_model writes no weights (it
    saves only under FULL_STATE_DICT), and save_outputs still wrote selfcorrect_config.json, the
    marker of a finished run (a re-run then said "nothing to do")."""
    from types import SimpleNamespace
    from unittest import mock

    import torch
    from safetensors.torch import save_file

    from train.outputs import check_saved_weights, save_outputs
    from train.run import FINISHED

    setup = SimpleNamespace(model=SimpleNamespace(use_peft=True), train=SimpleNamespace(merge=False))
    tokenizer = mock.Mock()

    def save(writes):
        out = tmp_path / str(len(os.listdir(tmp_path)))
        kwargs = dict(tokenizer=tokenizer, output_dir=str(out), method="sft", objective="o", setup=setup, config_objs=())
        with pytest.raises(UserError, match="no adapter.*not marked finished.*FULL_STATE_DICT"):
            save_outputs(save_model=writes, **kwargs)
        assert not (out / FINISHED).exists() and not (out / "README.md").exists()

    save(lambda d: None)  # what Trainer.save_model does under SHARDED_STATE_DICT
    save(lambda d: (os.makedirs(d), save_file({}, os.path.join(d, "adapter_model.safetensors"))))
    save(lambda d: (os.makedirs(d), save_file({"a": torch.zeros(0)}, os.path.join(d, "adapter_model.safetensors"))))
    tokenizer.save_pretrained.assert_not_called()
    good = tmp_path / "good"
    good.mkdir()
    save_file({"a": torch.ones(2)}, str(good / "adapter_model.safetensors"))
    check_saved_weights(str(good), use_peft=True)
    with pytest.raises(UserError, match="no model weights"):
        check_saved_weights(str(good), use_peft=False)  # a full fine-tune writes model*.safetensors


def _fsdp_env(yaml_path):
    """The variables ``accelerate launch`` sets from an FSDP config file (accelerate/utils/launch.py)."""
    import yaml

    with open(yaml_path) as f:
        fsdp = yaml.safe_load(f)["fsdp_config"]
    env = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": str(fsdp.get("fsdp_version", 1))}
    if "fsdp_state_dict_type" in fsdp:
        env["FSDP_STATE_DICT_TYPE"] = str(fsdp["fsdp_state_dict_type"])
    return env


def test_fsdp_sharded_state_dict_is_refused_by_name(tmp_path, capsys, monkeypatch):
    """The TRL trainers under FSDP with SHARDED_STATE_DICT (fsdp.yaml's setting, and accelerate's
    default for FSDP2) would train and save no adapter: refused before anything loads, naming the
    setting to change. accelerate_configs/fsdp.yaml itself passes."""
    from test_cli_contract import cli, one_error_line

    from train.run import check_fsdp_state_dict
    from train.sft import main

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    check_fsdp_state_dict(_fsdp_env(os.path.join(root, "accelerate_configs", "fsdp.yaml")))
    fsdp = {"ACCELERATE_USE_FSDP": "true"}
    check_fsdp_state_dict({**fsdp, "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_VERSION": "2"})
    check_fsdp_state_dict({**fsdp, "FSDP_VERSION": "1"})  # FSDP1's default is the full state dict
    check_fsdp_state_dict({"FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"})  # not an FSDP launch
    for env in ({**fsdp, "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"}, {**fsdp, "FSDP_VERSION": "2"}):
        with pytest.raises(UserError, match="fsdp_state_dict_type: FULL_STATE_DICT"):
            check_fsdp_state_dict(env)
    # Through the command, on a "GPU machine" (the launch check passes), before the output folder exists.
    monkeypatch.setattr("selfcorrect.device.gpu_count", lambda: 1)
    for key, value in {**fsdp, "FSDP_VERSION": "2", "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"}.items():
        monkeypatch.setenv(key, value)
    rows = tmp_path / "sft.jsonl"
    rows.write_text("{}\n")
    argv = ["--dataset_path", str(rows), "--output_dir", str(tmp_path / "o"), "--max_steps", "1"]
    one_error_line(*cli(main, argv, capsys), "fsdp_state_dict_type: FULL_STATE_DICT")
    assert not (tmp_path / "o").exists()


def test_snapshot_of_meta_weights_is_skipped():
    """With fsdp_cpu_ram_efficient_loading, ranks >= 1 load the model on the meta device (rank 0's
    weights reach them when FSDP wraps the model): copying them for the snapshot raised "Cannot
    copy out of meta tensor". Rank 0, which writes the card, has the real snapshot."""
    import torch

    from train.outputs import trainable_snapshot, weights_moved

    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    model[0].requires_grad_(False)
    assert trainable_snapshot(model) == {}
    assert weights_moved(model, {}) is None


@pytest.fixture
def one_rank_group(monkeypatch):
    """A real 1-rank gloo process group (FSDP2's fully_shard runs on it on the CPU)."""
    import torch.distributed as dist

    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dist.init_process_group("gloo")
    try:
        yield
    finally:
        if dist.is_initialized():  # a test may have destroyed it (run_cli does after a command)
            dist.destroy_process_group()


def test_weights_moved_gathers_fsdp_shards(one_rank_group):
    """After FSDP2 wraps the model its parameters are DTensor shards: comparing them with the plain
    snapshot raised "got mixed torch.Tensor and DTensor". Every rank gathers the trainable weights,
    in the same order, even with no snapshot (a rank >= 1 under cpu-RAM-efficient loading): the
    gather is a collective, and a rank that skipped it would hang the others."""
    from unittest import mock

    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from train.outputs import trainable_snapshot, weights_moved

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    model[0].requires_grad_(False)
    snapshot = trainable_snapshot(model)  # taken before the trainer wraps the model
    fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    assert isinstance(model[1].weight, DTensor)
    assert weights_moved(model, snapshot) is False
    with mock.patch.object(DTensor, "full_tensor", autospec=True, side_effect=DTensor.full_tensor) as gather:
        assert weights_moved(model, {}) is None
    assert gather.call_count == 2  # the two trainable weights, gathered although there is no snapshot
    with torch.no_grad():
        model[1].weight.to_local()[0, 0] += 0.5
    assert weights_moved(model, snapshot) is True


def test_grpo_own_rollout_is_refused_under_an_fsdp_launch(monkeypatch):
    """``accelerate launch`` with an FSDP config sets ACCELERATE_USE_FSDP, not TrainingArguments'
    ``fsdp``, so the refusal never fired: GRPO's own rollout would decode from sharded weights
    (unwrap_model_for_generation gathers ZeRO-3 only) and every forward under FSDP is a collective,
    so ranks decoding different lengths would hang. TRL's generation syncs the ranks."""
    from helpers import grpo_trl_args

    from train.grpo import GRPOEpisodeConfig, check_options

    cfg = grpo_trl_args()
    check_options(GRPOEpisodeConfig(), cfg)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UserError, match="does not support fsdp.*generation_backend: trl"):
        check_options(GRPOEpisodeConfig(), cfg)
    check_options(GRPOEpisodeConfig(first_attempt="trace", generation_backend="trl"), cfg)
