"""data_gen: run a base model for K self-correction rounds on a task and build SFT / DPO / RL
datasets from the traces (``build.py``). The task, prompt sets and the rollout engine it uses live
in the core package, selfcorrect/.

Run: ``python -m data_gen --config recipes/<model>/<task>/data_gen.yaml [--key value ...]``.
"""
