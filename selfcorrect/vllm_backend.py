"""The vLLM generation backend (``--generation_backend vllm``): ``run_rounds`` served by a vLLM engine.

It keeps the rollout protocol of selfcorrect/rollout.py and changes only who decodes:

- Every round's conversation is rendered by the project's renderer (``render_chat``), encoded by the
  project's tokenizer, and given to vLLM as token ids (``TokensPrompt``), so a round's context is the
  HF engine's token for token. vLLM's prefix cache (``enable_prefix_caching``) holds the earlier
  turns, so round r+1 encodes only its new tokens, as the HF engine's round cache does.
- Decoding stops at the same end-of-turn ids (``stop_token_ids``); the generated ids are cut and
  recorded by the shared ``RolloutBackend._generation`` (end token kept and counted).
- ``samples``: one request per trajectory with its own seed, not ``SamplingParams(n=...)``. ``n``
  shares one prompt, but from round 2 on each sample's conversation is its own, so every round
  after the first needs a request per trajectory anyway; seeding each request makes a trajectory's
  draws independent of what else is in the batch, and the prefix cache shares round 1's prompt as
  ``n`` would.
- Option probabilities: each request asks vLLM for the log-probabilities of its option-label tokens
  at every generated token (``SamplingParams.logprob_token_ids``, raw, before temperature: the
  quantity the HF engine keeps), so they are exact, as on the HF path. vLLM takes at most
  ``MAX_LOGPROB_TOKEN_IDS`` (128) such ids per request; a round whose labels have more tokens gets
  its option probabilities recorded as absent (None, counted as skipped by the metrics, and the run
  reports how many label tokens lacked them), never zeros. Rows without labels ask for the sampled
  token's log-probability only (``logprobs=0``), for the mean log-probability.
- A LoRA adapter is merged into a copy of the base (the project's ``merge_adapter``), and the engine
  serves that copy: the weights are the HF path's base + B·A, on every vLLM build (vLLM's LoRA
  kernels restrict ranks and target modules per build, and on the CPU build sampled 3.2x slower than
  merged weights: bench/vllm_lora_push.py).
  Under ``accelerate launch`` the main process merges once, in the engine's dtype, into a folder
  inside the run's output folder (shared by every process, as the shards are), and removes it when
  the run ends.

vLLM is imported only here and only when the backend is chosen, so the default environment never
needs it. Its engine core runs in a spawned process: a script that uses it needs an
``if __name__ == "__main__":`` guard (``python -m data_gen`` / ``python -m eval`` have one).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
from typing import Any

from selfcorrect.device import cuda_available
from selfcorrect.errors import UserError
from selfcorrect.modeling import merge_adapter, torch_dtype
from selfcorrect.rollout import Generation, RolloutBackend, SamplingConfig, row_seed_keys, seed_for

INSTALL_HINT = "pip install -e '.[vllm]' on a GPU machine, or bash scripts/setup_vllm.sh (CPU build, its own .venv-vllm)"


# The head sizes vLLM's CPU attention has kernels for, when the installed vLLM does not say (0.32:
# these); another one makes the engine die at its first request with a 150-line EngineDeadError.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
_HF_FALLBACK = "--generation_backend hf runs the same rounds without vLLM"


def head_dim(config: dict[str, Any]) -> int | None:
    """A transformers config's attention head size.

    >>> head_dim({"hidden_size": 64, "num_attention_heads": 4})
    16
    >>> head_dim({"hidden_size": 2048, "num_attention_heads": 8, "head_dim": 256})
    256
    """
    if isinstance(config.get("head_dim"), int):
        return config["head_dim"]
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 else None


def cpu_head_sizes() -> tuple[int, ...]:
    """The head sizes the installed vLLM's CPU attention backend declares."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return tuple(CPUAttentionBackend.get_supported_head_sizes())
    except Exception:  # noqa: BLE001 - another vLLM layout, or no vLLM: the sizes 0.32 declares
        return CPU_HEAD_SIZES


def check_cpu_attention(model_path: str) -> None:
    """On the CPU build, a model whose head size has no CPU attention kernel is refused before the
    engine starts (a local folder's config; a hub model is left to the engine)."""
    try:
        with open(os.path.join(model_path, "config.json"), encoding="utf-8") as f:
            size = head_dim(json.load(f))
    except (OSError, ValueError, AttributeError):
        return
    sizes = cpu_head_sizes()
    if size is not None and sizes and size not in sizes:
        raise UserError(
            f"vLLM's CPU attention has no kernel for head_dim={size} ({model_path}; it has {', '.join(map(str, sizes))}): "
            f"{_HF_FALLBACK}, or run vLLM on a GPU"
        )


def engine_failure(e: BaseException) -> UserError | None:
    """One line for a vLLM engine that died (its core runs in another process, so the parent sees
    only EngineDeadError, or a failed start), naming the cause where the exception carries it;
    None for any other exception.

    >>> class EngineDeadError(Exception): pass
    >>> print(engine_failure(EngineDeadError("EngineCore encountered an issue. See stack trace (above) for the root cause.")))
    the vLLM engine stopped (EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.); its log above names why: fix that, or --generation_backend hf runs the same rounds without vLLM
    >>> print(engine_failure(RuntimeError("Unsupported CPU attention configuration: head_dim=16 isa=1")))
    vLLM's CPU attention has no kernel for this model's head_dim=16: --generation_backend hf runs the same rounds without vLLM, or run vLLM on a GPU
    >>> engine_failure(ValueError("bad prompt")) is None
    True
    """
    chain, x = [], e
    while x is not None and x not in chain:
        chain.append(x)
        x = x.__cause__ or x.__context__
    text = "\n".join(str(x) for x in chain)
    m = re.search(r"Unsupported CPU attention configuration: head_dim=(\d+)", text)
    if m:
        return UserError(
            f"vLLM's CPU attention has no kernel for this model's head_dim={m[1]}: {_HF_FALLBACK}, or run vLLM on a GPU"
        )
    if (
        any(type(x).__name__ in ("EngineDeadError", "EngineGenerateError") for x in chain)
        or "Engine core initialization failed" in text
    ):
        first = (str(e).strip().splitlines() or [""])[0]
        return UserError(
            f"the vLLM engine stopped ({type(e).__name__}: {first}); its log above names why: fix that, or {_HF_FALLBACK}"
        )
    return None


def vllm_version() -> str:
    """The installed vLLM's version, or one error line saying how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise UserError(f"generation_backend vllm needs vLLM, which does not import here ({e}): {INSTALL_HINT}") from None
    return vllm.__version__


def vllm_dtype(name: str, on_gpu: bool) -> str:
    """The run's dtype option as vLLM names it ('auto' = bf16 on GPU, fp32 on CPU, as the HF path)."""
    return str(torch_dtype(name, "cuda" if on_gpu else "cpu")).removeprefix("torch.")


def assign_gpus(local_rank: int, tensor_parallel_size: int, env: dict[str, str] | None = None) -> str:
    """The CUDA_VISIBLE_DEVICES of process ``local_rank``'s engine under ``accelerate launch``: its own
    ``tensor_parallel_size`` GPUs, so the engines of several processes do not share GPU 0."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    import torch

    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    mine = gpus[local_rank * tensor_parallel_size : (local_rank + 1) * tensor_parallel_size]
    if len(mine) < tensor_parallel_size:
        raise UserError(
            f"process {local_rank} needs GPUs {local_rank * tensor_parallel_size}..{(local_rank + 1) * tensor_parallel_size - 1} "
            f"for tensor_parallel_size {tensor_parallel_size}, but {len(gpus)} are visible: lower num_processes or tensor_parallel_size"
        )
    return ",".join(mine)


class VLLMGenerator(RolloutBackend):
    """The rollout engine's interface (``render``, ``generate``) over a vLLM ``LLM``."""

    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        sampling: SamplingConfig | None = None,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        trust_remote_code: bool = False,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        llm: Any = None,
        trainer_engine: bool = False,
    ):
        """``model_path``: a local folder (resolved) or hub id. ``llm``: an engine already started on
        that model (tests share one per module); otherwise one is started here (minutes on a CPU).
        ``trainer_engine``: the engine of an on-policy trainer (``start_engine``'s ``trainer``)."""
        from transformers import GenerationConfig

        try:
            generation_config = GenerationConfig.from_pretrained(model_path)
        except OSError:  # a model without generation_config.json: the tokenizer's eos only, as the HF path
            generation_config = None
        super().__init__(tokenizer, sampling, generation_config)
        # Generated label tokens, and those whose option distribution vLLM could not return.
        self.label_steps = self.label_steps_absent = 0
        self.max_model_len = max_model_len
        self.llm = llm or start_engine(
            model_path,
            dtype,
            tensor_parallel_size,
            trust_remote_code,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            trainer=trainer_engine,
        )

    def generate_ids(
        self,
        prompt_ids: list[list[int]],
        option_labels: list[list[str] | None] | None = None,
        seed_key: str | list[str] = "",
        session: dict | None = None,
    ) -> list[Generation]:
        """Decode token-id prompts in one vLLM call. ``session`` (the HF engine's round cache) is not
        needed: vLLM's prefix cache carries the earlier rounds."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        s = self.sampling
        longest = max(map(len, prompt_ids), default=0) + s.max_new_tokens
        if self.max_model_len is not None and longest > self.max_model_len:
            # vLLM would refuse the prompt, or stop its answer at the limit where the HF path does not.
            raise UserError(
                f"a conversation reaches {longest} tokens (prompt + max_new_tokens), over max_model_len {self.max_model_len}:"
                " raise --max_model_len (or leave it unset: the model's context length)"
            )
        labels = option_labels or [None] * len(prompt_ids)
        label_ids = [sorted({i for lab in labs or [] for i in self.label_token_ids(lab)}) for labs in labels]
        keys = row_seed_keys(seed_key, len(prompt_ids))
        params = []
        for i, ids in enumerate(label_ids):
            ask = ids if 0 < len(ids) <= MAX_LOGPROB_TOKEN_IDS else None
            params.append(
                SamplingParams(
                    max_tokens=s.max_new_tokens,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    # Per-trajectory seeds (see the module docstring); greedy needs none.
                    seed=seed_for(s.seed, keys[i]) if s.temperature > 0 else None,
                    stop_token_ids=self.eos_ids,
                    logprob_token_ids=ask,
                    logprobs=None if ask else 0,  # the sampled token's log-probability comes with either
                    detokenize=False,  # the project's tokenizer decodes, as on the HF path
                )
            )
        try:
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        except Exception as e:  # noqa: BLE001 - a dead engine becomes one line; anything else is re-raised
            raise engine_failure(e) or e from None
        gens = []
        for out, p, labs in zip(outs, prompt_ids, labels):
            c = out.outputs[0]
            row = list(c.token_ids)
            steps = list(c.logprobs or [])
            chosen = [steps[k][t].logprob for k, t in enumerate(row)]

            def prob(step: int, tid: int, steps=steps) -> float | None:
                hit = steps[step].get(tid)
                return None if hit is None else math.exp(hit.logprob)

            g = self._generation(row, lambda n, chosen=chosen: sum(chosen[:n]) / n, labs, prob)
            g.token_logprobs = chosen[: g.new_tokens]
            self.label_steps += len(g.option_steps or [])
            self.label_steps_absent += sum(o.probs is None for o in g.option_steps or [])
            g.prompt_ids = p
            gens.append(g)
        return gens

    def report(self) -> str:
        return (
            f"vLLM: option probabilities at {self.label_steps - self.label_steps_absent} of {self.label_steps} generated "
            "label tokens (absent where a round's labels have more tokens than vLLM scores per request)"
        )


_ENGINES: dict[tuple, Any] = {}


def start_engine(
    model_path: str,
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    trust_remote_code: bool = False,
    *,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    trainer: bool = False,
):
    """A vLLM ``LLM`` on ``model_path``, one per process and settings: starting one takes minutes on
    a CPU, and a process that runs several commands (a test module, a script) reuses it.

    ``trainer``: the engine of an on-policy trainer, which differs in two ways. It runs in this
    process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as TRL's colocate mode), so ``push_weights``
    hands it the policy's tensors without serialising them to an engine-core process; and it
    returns log-probabilities after temperature (``logprobs_mode processed_logprobs``), the
    distribution the tokens were drawn from, which the trainer's loss recomputes."""
    on_gpu = cuda_available()
    key = (model_path, dtype, tensor_parallel_size, trust_remote_code, max_model_len, gpu_memory_utilization, trainer)
    if key not in _ENGINES:
        if not on_gpu:
            check_cpu_attention(model_path)
        from vllm import LLM

        memory = {"gpu_memory_utilization": gpu_memory_utilization}
        if not on_gpu:
            # Otherwise the CPU build reserves gpu_memory_utilization (0.92) of the machine's memory
            # for its KV cache and refuses to start when other processes hold more than the rest
            # (measured 2026-12-02: "Available memory on node 0 (13.24/19.84 GiB) on startup is less
            # than desired CPU memory utilization"). A fixed size starts beside other jobs.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB
            memory = {}
        extra = {}
        if trainer:
            # Read when the engine is built: the engine core of this LLM lives in this process.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            extra["logprobs_mode"] = "processed_logprobs"
            if on_gpu:
                import torch

                extra["device"] = f"cuda:{torch.cuda.current_device()}"  # the trainer process's GPU
        print(f"starting a vLLM engine on {model_path} ...", file=sys.stderr, flush=True)
        try:
            _ENGINES[key] = LLM(
                model=model_path,
                tokenizer=model_path,
                dtype=vllm_dtype(dtype, on_gpu),
                tensor_parallel_size=tensor_parallel_size,
                enable_prefix_caching=True,
                trust_remote_code=trust_remote_code,
                # CUDA graphs are a GPU feature; the CPU build was measured working in eager mode.
                enforce_eager=not on_gpu,
                seed=0,
                max_model_len=max_model_len,  # None: the model's context length
                **memory,
                **extra,
            )
        except Exception as e:  # noqa: BLE001 - a core that fails to start becomes one line; anything else is re-raised
            raise engine_failure(e) or e from None
        finally:
            if trainer:
                os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    return _ENGINES[key]


def push_weights(llm: Any, weights) -> int:
    """Load ``weights`` (an iterable of (name, tensor) in the Hugging Face checkpoint's names) into a
    trainer engine (``start_engine(trainer=True)``), in place, and drop its prefix cache, whose KV
    entries the old weights computed. Returns the number of tensors pushed.

    vLLM's in-place reload (``Worker.reload_weights``, layerwise) and not ``model.load_weights``: the
    CPU build repacks each linear weight for its GEMM kernels after loading and frees the original
    (``dispatch_cpu_unquantized_gemm(remove_weight=True)``), so a plain ``load_weights`` after start
    has no parameter to load into; the layerwise reload restores the parameters, loads and repacks."""
    count = 0

    def counted():
        nonlocal count
        for item in weights:
            count += 1
            yield item

    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": counted(), "is_checkpoint_format": True})
    llm.reset_prefix_cache()
    return count


def close_engine(llm: Any) -> None:
    """Shut down an engine of ``start_engine`` and forget it. A trainer engine runs in its process and
    its shutdown destroys the process's default process group (vLLM's ``cleanup_dist_env_and_memory``):
    the one the engine made in a single process, or the trainer's, which it joined, under several.
    So a trainer calls this after its last collective and before accelerate's ``end_training``;
    without it, vLLM's exit-time cleanup finds the groups destroyed and prints a traceback ("Invalid
    process group specified")."""
    for key, value in list(_ENGINES.items()):
        if value is llm:
            del _ENGINES[key]
    llm.llm_engine.engine_core.shutdown()


class MergedAdapter:
    """Base + adapter merged into a folder for the engines to serve.

    With ``state`` (every process calls this, as a collective) the main process alone merges, into
    ``folder``, and the others wait for it and read the same folder: one merge per run instead of
    one per process (8 GPUs x a 7B model was 8 fp32 copies in RAM and on disk). Without it, a
    temporary folder of this process. ``dtype``: the engine's (it would cast fp32 weights anyway).
    ``close`` removes the folder (from the main process): call it once every engine has loaded it."""

    def __init__(
        self,
        base: str,
        adapter: str,
        trust_remote_code: bool = False,
        *,
        dtype: str = "fp32",
        folder: str | None = None,
        state: Any = None,
    ):
        self.path = folder or tempfile.mkdtemp(prefix="selfcorrect-merged-")
        self.is_main = state is None or state.is_main_process
        failed = None
        if self.is_main:
            try:
                shutil.rmtree(self.path, ignore_errors=True)  # an interrupted run's partial merge
                merge_adapter(base, adapter, self.path, trust_remote_code, dtype=dtype)
            except BaseException as e:
                failed = e
        if state is not None and state.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            # The others wait here; a failed merge stops them too, instead of leaving them at a barrier.
            message = broadcast_object_list([f"{type(failed).__name__}: {failed}" if failed else None])[0]
            if message and not self.is_main:
                raise UserError(f"the main process could not merge the adapter for vLLM ({message})")
        if failed is not None:
            raise failed

    def close(self) -> None:
        if self.is_main:
            shutil.rmtree(self.path, ignore_errors=True)
