"""The on-policy loop that SCoRe (train/score.py) and K-round RL (train/kround.py) share: episodes
sampled by the rollout engine, per-round credit, the REINFORCE loss with a KL penalty
(train/rl_functions.py states it), one optimizer step (train/rl_strategy.py: the DDP/DeepSpeed
difference), checkpoints and the final adapter.

An episode is K rounds of one self-correction trajectory, sampled from the current policy with
``selfcorrect.rollout.run_rounds``, the same function data_gen and eval use: round t's prompt x_t is
the rendered conversation so far (exactly what eval would feed the model), y_t the tokens the
policy sampled. The tokens trained on are the tokens sampled, each scored in the context it was
sampled in (``pack_episode``).

A trainer subclass says only what is method-specific: the return each round's tokens are credited
(``returns``) and the KL weight of each round (``kl_coefs``). Everything else is here.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import shutil
import sys
from typing import Any

from tqdm.auto import tqdm

from selfcorrect.device import process_group_kwargs
from selfcorrect.errors import UserError
from selfcorrect.modeling import load_policy, load_tokenizer
from selfcorrect.rollout import StopRule, run_rounds
from selfcorrect.tasks import task_and_prompt_set
from selfcorrect.tasks.base import UNPARSED, Example
from train.checkpoints import ONLINE_RL_CHECKPOINT, mark_complete
from train.data import check_provenance, read_training_rows
from train.online_rl_config import OnlineRLConfig
from train.outputs import (
    SELF_CORRECTION_PNG,
    not_moved,
    plot_self_correction,
    push_folder_to_hub,
    save_model_all_ranks,
    save_outputs,
    self_correction_card,
    trainable_snapshot,
    wandb_init_kwargs,
    weights_moved,
)
from train.rl_engine import close_rollout_backend, make_rollout_backend, push_policy
from train.rl_functions import (
    Episode,
    episode_loss,
    episode_of,
    pack_episode,
    prompt_indices,
    round_advantages,
    token_logprobs,
)
from train.rl_strategy import TrainStrategy, check_not_fsdp, fill_deepspeed_config
from train.rl_timing import StepTimer
from train.run import parse_training, prepare_run, resumable, training_config_types

NO_SIGNAL_STEPS = 3  # consecutive no-signal steps before the trainer warns


def episode_stats(ep: Episode) -> list[float]:
    """What ``step_log`` averages per episode: right per round, unparsed per round, answer changed
    per round pair, rounds run.

    >>> episode_stats(Episode([[1]], [[2]], [0.0, 1.0, 1.0], [False, True, True], ["unparsed", "A", "A"], stop_round=2))
    [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 2.0]
    """
    k = len(ep.rewards)
    right = [float(c) for c in ep.correct] if ep.correct else [float("nan")] * k
    answers = ep.answers or [""] * k
    return (
        right
        + [float(a == UNPARSED) for a in answers]
        + [float(answers[t] != answers[t + 1]) for t in range(k - 1)]
        + [float(ep.rounds_run())]
    )


class OnlineRLTrainer:
    """The loop every on-policy trainer runs: set up, then per step sample episodes, credit each
    round, take one optimizer step; save checkpoints and the final adapter. Subclasses define
    ``method``, ``rounds()``, ``returns``, ``kl_coefs``, ``objective`` and may add log fields."""

    method = "online_rl"

    def __init__(self, setup, cfg: OnlineRLConfig):
        self.setup_args, self.cfg = setup, cfg
        self.history: list[dict[str, Any]] = []
        self.last_episodes: list[Episode] = []
        self._no_signal_streak = 0  # consecutive steps where most groups had all-zero advantages
        self.timer = StepTimer()

    # -- what a method defines --
    def rounds(self) -> int:
        raise NotImplementedError

    def returns(self, rewards: list[float], step: int) -> list[float]:
        """The return credited to each round's tokens of one episode, from its per-round rewards."""
        raise NotImplementedError

    def episode_returns(self, ep: Episode, step: int) -> list[float]:
        """The returns of one episode; methods whose credit needs more than the rewards (the grader's
        verdicts, the answers) override this."""
        return self.returns(ep.rewards, step)

    def kl_coefs(self, step: int) -> list[float]:
        raise NotImplementedError

    def objective(self) -> str:
        raise NotImplementedError

    def extra_log(self, step: int, rewards: list[list[float]]) -> dict[str, Any]:
        return {}

    def stop_rule(self) -> StopRule | None:
        """When an episode stops before its last round (``stop_when``); None: every round runs."""
        return None

    # -- set-up --
    def setup(self) -> None:
        """Everything before the first step, in an order that keeps runs reproducible (the seed is set
        before the adapter's random initialisation): the process group, the data, the model with
        its reference, the optimizer and schedule, a resumed state, the tracker, the sampler."""
        resume = self._setup_run()
        model = self._setup_model()
        self._setup_optimizer(model)
        self.start_step = self._resume(resume) if resume else 0
        cfg = self.cfg
        if self.accelerator.is_main_process and cfg.report_to == "wandb":
            self.accelerator.init_trackers(
                f"selfcorrect-{self.method}",
                config={**vars(self.setup_args.task), **vars(cfg)},
                init_kwargs=wandb_init_kwargs(cfg.run_name),
            )
        self.gen = make_rollout_backend(
            cfg,
            self.policy,
            self.tokenizer,
            self.setup_args.model.model_name_or_path,
            load_in_4bit=self.setup_args.model.load_in_4bit,
        )

    def _setup_run(self) -> str | None:
        """Checks, the seed, the output folder, the process group and the examples; returns the
        checkpoint to resume from."""
        from accelerate import Accelerator, DistributedType
        from accelerate.utils import InitProcessGroupKwargs, set_seed

        setup, cfg = self.setup_args, self.cfg
        check_not_fsdp(self.method)
        set_seed(cfg.seed)
        self.task, self.prompt_set = task_and_prompt_set(setup.task)
        if self.prompt_set.external:
            raise UserError(f"{self.method} trains intrinsic self-correction: use a prompt set without external feedback")
        resume = prepare_run(self.method, setup, cfg, ONLINE_RL_CHECKPOINT)
        backend = process_group_kwargs().get("backend")  # gloo under DeepSpeed on the CPU
        # prepare_run made the group with cfg.ddp_timeout; the same here, should it come first.
        group = InitProcessGroupKwargs(backend=backend, timeout=datetime.timedelta(seconds=cfg.ddp_timeout))
        self.accelerator = Accelerator(
            cpu=cfg.use_cpu,
            log_with="wandb" if cfg.report_to == "wandb" else None,
            kwargs_handlers=[group],
        )
        self.deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        rows = read_training_rows(setup.data.dataset_path, ("example",), setup.data.limit)
        check_provenance(rows, setup.data.dataset_path, self.task.name, self.prompt_set.name)
        self.examples = [
            Example.from_dict(json.loads(r["example"]) if isinstance(r["example"], str) else r["example"]) for r in rows
        ]
        return resume

    def _setup_model(self):
        """The tokenizer, the policy (LoRA/QLoRA adapter on the base, or the whole model) and the
        reference: the base under the adapter with LoRA, else a frozen copy."""
        setup, cfg = self.setup_args, self.cfg
        self.tokenizer = load_tokenizer(setup.model.model_name_or_path, cfg.trust_remote_code, padding_side="right")
        model, peft_config = load_policy(setup.model, cfg.trust_remote_code)
        self.ref_model = None
        if peft_config is not None:
            from peft import get_peft_model, prepare_model_for_kbit_training

            if setup.model.load_in_4bit:
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
            model = get_peft_model(model, peft_config)
        elif self.deepspeed:
            # The reference model would need an engine of its own (sharded under ZeRO-3); with LoRA
            # the reference is the base under the adapter, which the engine already holds.
            raise UserError(f"{self.method} under DeepSpeed trains a LoRA adapter: set use_peft true")
        else:
            self.ref_model, _ = load_policy(setup.model, cfg.trust_remote_code)
            self.ref_model.requires_grad_(False).eval()
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if peft_config is not None:
                model.enable_input_require_grads()
        return model

    def _setup_optimizer(self, model) -> None:
        """AdamW over the trainable weights, prepared with the model (the DeepSpeed engine under
        DeepSpeed), and the linear schedule."""
        import torch
        from transformers import get_linear_schedule_with_warmup

        cfg = self.cfg
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.initial = trainable_snapshot(model)
        optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if self.deepspeed:
            fill_deepspeed_config(
                self.accelerator.state.deepspeed_plugin.deepspeed_config,
                cfg.micro_batch_size,
                self.accelerator.num_processes,
                cfg.max_grad_norm,
            )
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # Not prepared: accelerate's prepared scheduler steps once per process at every call (it
        # assumes a schedule sized for one process), so with N processes the decay would end after
        # max_steps / N steps. Here max_steps counts optimizer steps whatever N is, as in HF Trainer.
        self.scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.strategy = TrainStrategy(
            self.accelerator,
            self.model,
            self.optimizer,
            self.params,
            lora=self.ref_model is None,
            max_grad_norm=cfg.max_grad_norm,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)
        self.policy = self.accelerator.unwrap_model(self.model)

    def _resume(self, checkpoint: str) -> int:
        """Load a checkpoint's trainable weights, optimizer, schedule and RNG state; returns the step it
        was saved at."""
        self.strategy.load_state(checkpoint, self.policy)
        with open(os.path.join(checkpoint, "online_rl_state.json")) as f:
            return json.load(f)["step"]

    # -- one step --
    def sample(self, step: int, on_round=None) -> list[Episode]:
        """Episodes of this process at ``step``: num_generations per prompt, consecutive."""
        cfg = self.cfg
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        idx = prompt_indices(step, cfg.per_device_prompts, world, rank, len(self.examples), cfg.seed)
        examples = [self.examples[i] for i in idx]
        self.policy.eval()
        if self.cfg.generation_backend == "vllm":
            # The engine samples this step with the weights the update below scores; under ZeRO-3
            # the gathered ones. The engine decodes outside the gather: it holds its own copy.
            with self.timer("weight_push"), self.strategy.weights_for_sampling():
                push_policy(self.gen, self.policy, lora=self.ref_model is None)
        gather = self.strategy.weights_for_sampling() if self.cfg.generation_backend == "hf" else contextlib.nullcontext()
        with self.timer("sampling"), gather:
            rollout = run_rounds(
                self.gen,
                self.task,
                self.prompt_set,
                examples,
                self.rounds(),
                samples=cfg.num_generations,
                on_round=None if on_round is None else lambda r, gens: on_round(r),
                # An episode's stream is keyed by the step, its prompt's place in the step's batch over
                # every process, and its sample index (run_rounds): N processes of P prompts sample
                # the episodes one process of N x P prompts does, and a prompt drawn twice samples twice.
                seed_key=[f"s{step}/q{rank * cfg.per_device_prompts + i}" for i in range(len(examples))],
                stop=self.stop_rule(),
            )
        gens = rollout.generations
        self.timer.tokens["sampled"] += sum(g.new_tokens for by_round in gens for g in by_round)
        episodes = [episode_of(tr, [g[e] for g in gens]) for e, tr in enumerate(rollout.trajectories)]
        # The loop hands step_log the rewards only; the verdicts, answers and stop rounds it also
        # logs are read from here.
        self.last_episodes = episodes
        return episodes

    def update(self, episodes: list[Episode], advantages: list[list[float]], kl: list[float]) -> dict[str, Any]:
        """One optimizer step on this process's episodes; returns the loss, its per-round parts (this
        process's share) and the learning rate the step used.

        Each process packs its own episodes, and a template that re-renders a turn starts a new
        sequence, so processes hold different numbers of micro-batches. Under DDP every backward
        pass outside ``no_sync`` is an all-reduce that pairs with the other processes' passes in
        order: with unequal counts they paired across steps and the run hung. So the processes agree
        on the largest count (one gather), the shorter ones run micro-batches that carry no loss, and
        gradients accumulate locally until the last pass, which all-reduces them once. The loss is
        divided by the process's episode count and DDP averages over processes, so the gradient is
        the mean over every episode of the step, as in one process."""
        import torch

        accelerator, cfg = self.accelerator, self.cfg
        self.policy.train()
        seqs = [(ids, owner, e) for e, ep in enumerate(episodes) for ids, owner in pack_episode(ep)]
        chunks = [seqs[s : s + cfg.micro_batch_size] for s in range(0, len(seqs), cfg.micro_batch_size)]
        n = len(chunks)
        if accelerator.num_processes > 1:
            n = int(accelerator.gather(torch.tensor([n], device=accelerator.device)).max())
        pad = self.gen.pad_id
        no_loss = [([pad, pad], [-1, -1], 0)]  # a padding micro-batch: every token's owner is -1
        k = len(kl)
        kl_coef = torch.tensor(kl, device=accelerator.device)
        total = {"loss": 0.0, "pg": [0.0] * k, "kl": [0.0] * k}
        for i in range(n):
            chunk = chunks[i] if i < len(chunks) else no_loss
            width = max(len(ids) for ids, _, _ in chunk)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x, _, _ in chunk], device=accelerator.device)
            att = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _, _ in chunk], device=accelerator.device)
            owner = torch.tensor([o + [-1] * (width - len(o)) for _, o, _ in chunk], device=accelerator.device)[:, 1:]
            adv = torch.tensor([advantages[e] for _, _, e in chunk], device=accelerator.device, dtype=torch.float32)
            if i < len(chunks):
                self.timer.tokens["trained"] += int(att.sum())
            with self.strategy.micro_batch(i, n):
                with accelerator.autocast():
                    with self.timer("policy_pass"):
                        logp = token_logprobs(self.model, ids, att, cfg.temperature)
                    with torch.no_grad(), self.timer("reference_pass"):  # the unwrapped model: no DDP bookkeeping
                        if self.ref_model is not None:
                            ref = token_logprobs(self.ref_model, ids, att, cfg.temperature)
                        else:
                            with self.policy.disable_adapter():
                                ref = token_logprobs(self.policy, ids, att, cfg.temperature)
                loss, parts = episode_loss(logp.float(), ref.float(), owner, adv, kl_coef, len(episodes))
                with self.timer("policy_pass"):  # the backward belongs to the policy's pass
                    self.strategy.backward(loss)
            total["loss"] += float(loss.detach())
            for key in ("pg", "kl"):
                total[key] = [a + b for a, b in zip(total[key], parts[key])]
        total["lr"] = self.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it next)
        with self.timer("optimizer_step"):
            self.strategy.optimizer_step()
            self.scheduler.step()
        return total

    # -- the loop --
    def run(self) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        bar = tqdm(
            range(self.start_step, cfg.max_steps),
            desc=self.method,
            disable=not accelerator.is_local_main_process,
            initial=self.start_step,
            total=cfg.max_steps,
        )
        k = self.rounds()
        with resumable(cfg.output_dir):
            self._steps(bar, k)
        self.save_final()
        # After the last collective: the engine's shutdown destroys the default process group, which
        # under several processes is the trainer's own (the engine joined it instead of making one).
        close_rollout_backend(self.gen)
        accelerator.end_training()

    def _steps(self, bar, k: int) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        for step in bar:
            bar.set_postfix_str("sampling round 1")
            episodes = self.sample(step, on_round=lambda r: bar.set_postfix_str(f"sampling round {min(r + 2, k)}"))
            rewards = [ep.rewards for ep in episodes]
            returns = [self.episode_returns(ep, step) for ep in episodes]
            advantages = round_advantages(returns, cfg.num_generations)
            bar.set_postfix_str("update")
            parts = self.update(episodes, advantages, self.kl_coefs(step))
            log = self.step_log(step, rewards, advantages, parts)
            log.update(self.timer.step_log(accelerator))
            # Not in ``log`` (trackers and the finite check take numbers): a digest of the step's
            # sampled tokens, so the first step where two runs sampled differently can be read off
            # their logs (docs/reproducibility.md).
            self.history.append({"step": step + 1, **log, "samples_sha256": self.samples_digest(episodes)})
            if (step + 1) % cfg.logging_steps == 0 or step + 1 == cfg.max_steps:
                accelerator.log(log, step=step + 1)
            bar.set_postfix({k2: f"{v:.3f}" for k2, v in log.items() if k2.startswith(("reward_r", "loss"))})
            if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < cfg.max_steps:
                self.save_checkpoint(step + 1)

    def step_log(
        self,
        step: int,
        rewards: list[list[float]],
        advantages: list[list[float]],
        parts: dict[str, Any],
    ) -> dict[str, float]:
        """The statistics of one step over the episodes of every process (one gather): per-round
        rewards, flips, loss parts and KL; ``frac_zero_advantage``, the share of prompt groups whose
        advantages are all zero (identical returns: no policy-gradient signal; TRL's GRPO logs it as
        frac_reward_zero_std); ``adv_abs_mean``; and the learning rate the step used.

        Self-correction while training (from the sampled episodes, ``sample``): ``accuracy_r{t}``, the
        share right by the grader's ``correct`` (a reward is no accuracy for every task);
        ``flip_rate_{t}_{t+1}``, the share whose parsed answer changed, whatever its correctness;
        ``unparsed_r{t}``; ``stop_round_mean``, the mean number of rounds an episode ran (K without
        stopping). A stopped episode's carried rounds count with their carried answer, as in eval."""
        import torch

        acc, g, k = self.accelerator, self.cfg.num_generations, len(rewards[0])
        episodes = self.last_episodes if len(self.last_episodes) == len(rewards) else None
        own_rows = [list(r) + list(a) for r, a in zip(rewards, advantages)]
        if episodes is not None:
            own_rows = [row + episode_stats(ep) for row, ep in zip(own_rows, episodes)]
        rows = torch.tensor(own_rows, dtype=torch.float64, device=acc.device)
        own = torch.tensor([[parts["loss"], *parts["pg"], *parts["kl"]]], dtype=torch.float64, device=acc.device)
        if acc.num_processes > 1:
            rows = acc.gather(rows)
            own = acc.gather(own)  # each process's parts are the mean over its share; the shares are equal
        own_mean = own.mean(0).tolist()
        rew, adv = rows[:, :k], rows[:, k : 2 * k]
        n = rew.shape[0]
        no_signal = (adv.abs() < 1e-9).reshape(-1, g * k).all(-1)  # leave-one-out of equal returns is 0 up to rounding
        log: dict[str, float] = {"loss": own_mean[0]}
        for t in range(k):
            log[f"reward_r{t + 1}"] = float(rew[:, t].mean())
            log[f"pg_loss_r{t + 1}"] = own_mean[1 + t]
            log[f"kl_r{t + 1}"] = own_mean[1 + k + t]
        for t in range(1, k):
            log[f"wrong_to_right_{t}_{t + 1}"] = float((rew[:, t - 1] < rew[:, t]).sum()) / n
            log[f"right_to_wrong_{t}_{t + 1}"] = float((rew[:, t - 1] > rew[:, t]).sum()) / n
        if episodes is not None:
            right, unparsed, changed = rows[:, 2 * k : 3 * k], rows[:, 3 * k : 4 * k], rows[:, 4 * k : 5 * k - 1]
            for t in range(k):
                log[f"accuracy_r{t + 1}"] = float(right[:, t].mean())
                log[f"unparsed_r{t + 1}"] = float(unparsed[:, t].mean())
            for t in range(1, k):
                log[f"flip_rate_{t}_{t + 1}"] = float(changed[:, t - 1].mean())
            log["stop_round_mean"] = float(rows[:, 5 * k - 1].mean())
        log["kl"] = sum(own_mean[1 + k :])
        log["frac_zero_advantage"] = float(no_signal.double().mean())
        log["adv_abs_mean"] = float(adv.abs().mean())
        log["lr"] = parts["lr"]
        log.update(self.extra_log(step, rewards))
        if not all(math.isfinite(v) for v in log.values()):
            raise RuntimeError(f"non-finite {self.method} statistics at step {step + 1}: {log}")
        self._warn_if_no_signal(step, log["frac_zero_advantage"])
        return log

    def samples_digest(self, episodes: list[Episode]) -> str:
        """First 16 hex digits of the sha256 of every process's sampled token ids at this step, per
        episode and round (one gather of Python objects under several processes)."""
        from accelerate.utils import gather_object

        ids = [ep.responses for ep in episodes]
        if self.accelerator.num_processes > 1:
            ids = gather_object([ids])
        return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]

    def _warn_if_no_signal(self, step: int, frac: float) -> None:
        """One warning line when most groups carried no signal for NO_SIGNAL_STEPS steps in a row:
        then only the KL term moves the weights, which a rising loss or a moved adapter hides."""
        self._no_signal_streak = self._no_signal_streak + 1 if frac > 0.5 else 0
        if self._no_signal_streak == NO_SIGNAL_STEPS and self.accelerator.is_main_process:
            print(
                f"warning: {self.method} steps {step + 2 - NO_SIGNAL_STEPS}-{step + 1}: most prompt groups had identical"
                f" returns over their {self.cfg.num_generations} episodes (frac_zero_advantage {frac:.2f}), so only the KL"
                " term trained; raise num_generations or temperature, or check that the reward can vary",
                file=sys.stderr,
            )

    # -- saving --
    def save_checkpoint(self, step: int) -> None:
        """The adapter (or the whole model, trained without LoRA), the optimizer, the schedule and the RNG
        states: what a resume needs, and a checkpoint that eval can load.

        Written under a temporary name and renamed once every process has written its part, so a
        checkpoint-N folder is complete or absent (a run killed mid-save leaves the temporary folder,
        which a resume ignores and the next save of that step replaces)."""
        accelerator = self.accelerator
        ckpt = os.path.join(self.cfg.output_dir, f"checkpoint-{step}")
        tmp = f"{ckpt}.tmp"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        self.strategy.save_state(tmp)
        save_model_all_ranks(accelerator, self.model, tmp)
        if accelerator.is_main_process:
            with open(os.path.join(tmp, "online_rl_state.json"), "w") as f:
                json.dump({"step": step, "method": self.method}, f)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            mark_complete(tmp)
            if os.path.exists(ckpt):  # an older incomplete or superseded checkpoint of this step
                shutil.rmtree(ckpt)
            os.replace(tmp, ckpt)
        accelerator.wait_for_everyone()

    def save_final(self) -> None:
        accelerator, cfg, setup = self.accelerator, self.cfg, self.setup_args
        accelerator.wait_for_everyone()
        last = self.history[-1] if self.history else {}
        k = self.rounds()
        extra = {
            "steps": cfg.max_steps,
            "last mean reward per round": " / ".join(f"{last.get(f'reward_r{t + 1}', float('nan')):.3f}" for t in range(k)),
        }
        extra.update(self_correction_card(last, k))
        moved = weights_moved(self.policy, self.initial)
        if moved is False:
            extra["warning"] = not_moved(self.scheduler, cfg.max_steps)
        config_objs = setup.configs(cfg)
        save_outputs(
            save_model=lambda d: save_model_all_ranks(accelerator, self.model, d),
            tokenizer=self.tokenizer,
            output_dir=cfg.output_dir,
            method=self.method,
            objective=self.objective(),
            setup=setup,
            config_objs=config_objs,
            extra=extra,
            trust_remote_code=cfg.trust_remote_code,
            is_main_process=accelerator.is_main_process,
        )
        if accelerator.is_main_process:
            with open(os.path.join(cfg.output_dir, f"{self.method}_log.jsonl"), "a") as f:
                for h in self.history:
                    f.write(json.dumps(h) + "\n")
            plot_self_correction(self.history, k, os.path.join(cfg.output_dir, SELF_CORRECTION_PNG))
            if moved is False:
                print(f"warning: {extra['warning']}", file=sys.stderr)
            if cfg.push_to_hub:
                push_folder_to_hub(cfg.output_dir, cfg.hub_model_id)
            print(f"{self.method} done: {cfg.output_dir}", file=sys.stderr)


def run_trainer(
    trainer_cls: type[OnlineRLTrainer],
    config_cls: type[OnlineRLConfig],
    argv: list[str],
    prog: str,
    description: str | None = None,
) -> None:
    """The whole entry point of an on-policy method: parse the recipe, set up, train, save."""
    setup, cfg = parse_training(training_config_types(config_cls), argv, prog=prog, description=description)
    trainer = trainer_cls(setup, cfg)
    trainer.setup()
    trainer.run()
