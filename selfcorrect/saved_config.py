"""The resolved config a command writes next to its outputs, with secrets replaced by a marker."""

from __future__ import annotations

import dataclasses
import os
import re
from enum import Enum
from typing import Any

from selfcorrect.config import field_types, value_matches

# Exact option names that carry credentials (never a substring match: max_new_tokens is no secret).
SECRET_KEYS = {
    "hub_token",
    "push_to_hub_token",
    "hf_token",
    "token",
    "api_key",
    "wandb_api_key",
    "password",
    "secret",
    "access_token",
    "auth_token",
}
_SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})$")  # hub and API key formats
_SECRET_ENV = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)
REDACTED = "<redacted>"


def _secret_env_values() -> set[str]:
    return {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8}


def redact_secret_values(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with every value that looks like a key, or equals a secret-named environment variable,
    replaced by REDACTED (for run identities, which name values rather than options)."""
    secrets = _secret_env_values()
    return {k: REDACTED if isinstance(v, str) and (v in secrets or _SECRET_VALUE.match(v)) else v for k, v in d.items()}


def config_to_dict(*objs: Any) -> dict[str, Any]:
    """The resolved configuration as plain data, written next to outputs so that
    ``--config <that file>`` re-runs the command. Secrets are redacted by exact option name, by the
    look of the value (hub and API keys) and by equality with a secret-named environment variable.
    ``overwrite`` is left out: it is an action on the folder, not a setting of the run, and a saved
    config must resume its run, not wipe it."""
    secrets = _secret_env_values()
    out: dict[str, Any] = {}
    for obj in objs:
        d = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        types_ = field_types([type(obj)])
        for k, v in d.items():
            if k == "overwrite":
                continue
            if isinstance(v, str) and k in types_ and not value_matches(v, types_[k]) and value_matches([v], types_[k]):
                v = [v]  # TRL's ModelConfig turns lora_target_modules ["all-linear"] into "all-linear"
            if k.endswith("_token") and v == f"<{k.upper()}>":
                # transformers' TrainingArguments.to_dict masks every *_token key (pad_token, eos_token
                # too); take the real value and let the rules below redact the secret ones.
                v = getattr(obj, k)
            if isinstance(v, Enum):
                v = v.value
            if k.lower() in SECRET_KEYS and v not in (None, ""):
                out[k] = REDACTED
            elif isinstance(v, str) and (v in secrets or _SECRET_VALUE.match(v)):
                out[k] = REDACTED
            elif isinstance(v, (str, int, float, bool, type(None), list, dict)):
                out[k] = v
            else:
                out[k] = str(v)
    return out
