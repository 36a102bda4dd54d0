"""train: one entry point per method, each launched with accelerate on a YAML recipe.

    accelerate launch --quiet --config_file accelerate_configs/cpu.yaml train/sft.py --config recipes/demo/sft.yaml

sft.py (correction traces), dpo.py (better-vs-worse revisions), grpo.py (RL on the revision turn,
first attempts on-policy), score.py (SCoRe two-attempt online RL), kround.py (K-round RL for
convergence). online_rl.py is the on-policy loop SCoRe and K-round RL share; common.py holds what
every method shares; rewards.py the reward shaping.
"""
