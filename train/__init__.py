"""train: one entry point per method, each launched with accelerate on a YAML recipe.

    accelerate launch --quiet --config_file accelerate_configs/cpu.yaml train/sft.py --config recipes/demo/sft.yaml

sft.py (correction traces), dpo.py (better-vs-worse revisions), grpo.py (RL on the revision turn,
first attempts on-policy), score.py (SCoRe two-attempt online RL), kround.py (K-round RL for
convergence). What they share: run.py (options, resuming, claiming the output folder), data.py
(training rows and their checks), outputs.py (saving, model card, whether the weights moved),
online_rl.py (the on-policy loop SCoRe and K-round RL share; its pure functions in rl_functions.py, its options in online_rl_config.py, the DDP/DeepSpeed difference in rl_strategy.py), rewards.py (rewards and returns).
Chat rendering lives in selfcorrect/chat.py and model loading in selfcorrect/modeling.py, beside
the inference side that uses them too.
"""
