"""Words a reader takes at face value: a run that never settled is not reported as settling at round K;
library lines that tell the user nothing are not printed."""

import logging
import warnings

from eval.compare import format_table
from eval.report import settling


def row(label, k, conv):
    return {
        "run": label,
        "n": 10,
        "K": k,
        "acc_round1": 0.5,
        "acc_round1_ci": [0.2, 0.8],
        "acc_roundK": 0.5,
        "acc_roundK_ci": [0.2, 0.8],
        "unparsed_roundK": 0.0,
        "convergence_round": conv,
        "right_to_wrong": 0.0,
        "wrong_to_right": 0.0,
    }


def test_convergence_column_says_when_a_run_never_settled():
    table = format_table([row("settled", 5, 3), row("never", 5, 5), row("one_round", 1, 1)], []).splitlines()
    head = [c.strip() for c in table[0].split("|")]
    col = head.index("conv. round")
    cells = {line.split("|")[0].strip(): line.split("|")[col].strip() for line in table[1:] if "|" in line}
    assert cells == {"settled": "3", "never": "not settled", "one_round": "n/a (K = 1)"}


def test_settling_sentence():
    def metrics(values, conv):
        return {"headline": {"values": values}, "convergence": {"convergence_round": conv}}

    assert settling(metrics([0.4, 0.5, 0.5], 2)).startswith("settles at round 2 (accuracy 0.400 -> 0.500, up)")
    assert settling(metrics([0.4, 0.5, 0.3], 3)).startswith("does not settle within 3 rounds")
    assert settling(metrics([0.4], 1)) == "K = 1: convergence not defined (accuracy 0.400)"


def test_library_noise_is_filtered():
    from selfcorrect.cli import quiet_library_noise

    logger = logging.getLogger("transformers.modeling_layers")
    line = "Caching is incompatible with gradient checkpointing in LlamaDecoderLayer. Setting `use_cache=False`."
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, line, None, None)
    other = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "something else", None, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        quiet_library_noise()  # as every in-process command run does: filters are not stacked
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=1)
    assert not caught and not logger.filter(record) and logger.filter(other) and len(logger.filters) == 1
