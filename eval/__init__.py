"""eval: does a trained checkpoint converge faster and more stably over self-correction
rounds than the base model with intrinsic prompting?

    python -m eval --config recipes/<model>/<task>/eval.yaml      # run K rounds and measure
    python -m eval.external --task bbq --dataset_path ... --predictions preds.jsonl --output_dir ...
    python -m eval.compare --runs runs/base runs/sft ... --output_dir runs/compare

(The package is named ``eval`` by design; import its modules explicitly, never ``from eval import *``.)
"""
