"""selfcorrect's core, shared by the three stages (data_gen/, train/, eval/).

- ``tasks/``: one file per task: loading, first turn, grading an answer, and the task's metrics
- ``prompts`` + ``prompt_sets.yaml``: the named self-correction instructions
- ``trace``: the typed trace (``Round``, ``Trajectory``) every stage reads and writes
- ``rollout``: the multi-round generation engine; ``trace_run``: runs it over a dataset, sharded
  and resumable, into traces.jsonl
- ``config`` (recipes and shared options), ``errors``, ``jsonl``, ``modeling``, ``device``, ``hub``,
  ``stats`` (bootstrap intervals)

The core never imports a stage package.
"""
