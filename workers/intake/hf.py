"""Hugging Face checkpoints (optional ``transformers``, imported lazily) and their layer kinds.

Models load with ``attn_implementation="eager"`` (explicit softmax attention, so double
backward and forward-mode AD work), ``local_files_only=True`` and safetensors weights only.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.errors import IntakeError

_LOAD_LOCK = threading.Lock()
_Q = {"query", "q_proj", "q_lin", "q"}
_K = {"key", "k_proj", "k_lin", "k"}
_V = {"value", "v_proj", "v_lin", "v"}
_O = {"out_proj", "o_proj", "out_lin", "o"}
_QKV = {"c_attn", "qkv", "query_key_value", "Wqkv"}
_UP = {"c_fc", "fc1", "up_proj", "gate_proj", "lin1", "wi", "wi_0", "wi_1", "dense_h_to_4h"}
_DOWN = {"fc2", "down_proj", "lin2", "wo", "dense_4h_to_h"}
_HEAD = {"lm_head", "classifier", "score", "decoder", "qa_outputs"}
_ATTN_PARENTS = {"attn", "attention", "self_attn", "crossattention"}


class HFModel(nn.Module):
    """Wraps a ``transformers`` model so that ``forward`` returns one tensor.

    Logits for models with a head, else the first output (the last hidden state). An
    encoder-decoder (T5, BART, ...) reads its decoder inputs from the targets by the model's
    own shift (``prepare_decoder_input_ids_from_labels``: the start token, then the targets
    one step late), so ``forward_takes_targets`` is set and the engine passes ``targets=``.
    Parameter names gain a ``model.`` prefix.
    """

    def __init__(self, model: nn.Module, default_loss: str) -> None:
        super().__init__()
        self.model = model
        self.default_loss = default_loss
        self.input_name = str(getattr(model, "main_input_name", "input_ids"))
        self.has_logits = default_loss != "mse" or _is_regression_head(model)
        self.forward_takes_targets = bool(getattr(model.config, "is_encoder_decoder", False))
        self.curvprof_config: dict[str, Any] = {}
        self.curvprof_kinds: dict[str, str] = {}
        self.curvprof_transposed: list[str] = []

    def forward(
        self,
        inputs: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {self.input_name: inputs}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if self.forward_takes_targets:
            if targets is None:
                raise ValueError(
                    f"{type(self.model).__name__} is an encoder-decoder: its decoder inputs "
                    "come from the targets, so forward needs targets="
                )
            kwargs["decoder_input_ids"] = self.decoder_inputs(targets)
        out = self.model(**kwargs)
        if not self.has_logits:
            first: torch.Tensor = out[0]
            return first
        logits: torch.Tensor = out.logits
        return logits

    def own_loss(
        self, inputs: torch.Tensor, attention_mask: torch.Tensor | None, targets: torch.Tensor
    ) -> torch.Tensor:
        """``outputs.loss`` of the wrapped model with ``labels=targets`` (its own loss: its
        own shift for a causal LM, its own reduction)."""
        kwargs: dict[str, Any] = {self.input_name: inputs, "labels": targets}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        loss = self.model(**kwargs).loss
        if not isinstance(loss, torch.Tensor):
            raise ValueError(f"{type(self.model).__name__} computes no loss from labels")
        return loss

    def decoder_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """The model's own right shift of the targets (-100 becomes the pad token)."""
        shift = getattr(self.model, "prepare_decoder_input_ids_from_labels", None)
        if shift is None:
            raise ValueError(f"{type(self.model).__name__} has no decoder-input shift")
        shifted: torch.Tensor = shift(labels=targets.long())
        return shifted


def import_transformers() -> Any:
    """``transformers``, or IntakeError saying what to install or fix (one line)."""
    try:
        import transformers
    except ImportError:
        raise IntakeError(
            "Hugging Face checkpoints need transformers: install curvprof[hf]"
        ) from None
    try:
        transformers.AutoModel  # noqa: B018 - the lazy import that touches torchvision
    except Exception as exc:
        raise IntakeError(_transformers_broken(exc)) from None
    return transformers


def _transformers_broken(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "torchvision::nms" in text or "torchvision" in text:
        return (
            "transformers cannot import because the installed torchvision does not match "
            f"torch {torch.__version__} (operator torchvision::nms does not exist; the bench "
            "extra's backpack can pull a CUDA torchvision): uninstall torchvision "
            "(pip uninstall torchvision) or install the build that matches your torch"
        )
    return f"transformers cannot import: {type(exc).__name__}: {text[:300]}"


def load_hf(directory: Path, config: dict[str, Any], max_parameters: int | None = None) -> HFModel:
    """Instantiate the class named in ``config["architectures"]`` (else ``AutoModel``).

    With ``max_parameters`` the model is first built from its config on the meta device
    (nothing allocated) and its parameter count checked, before ``from_pretrained`` runs.
    """
    transformers = import_transformers()
    names = config.get("architectures") or []
    try:
        cls = getattr(transformers, str(names[0]), None) if names else transformers.AutoModel
    except Exception as exc:  # a lazy submodule import failing (e.g. a broken torchvision)
        raise IntakeError(_transformers_broken(exc)) from None
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise IntakeError(f"unknown Hugging Face architecture {names[0]!r}")
    if max_parameters is not None:
        _check_hf_size(transformers, cls, directory, max_parameters)
    with contextlib.suppress(Exception):  # no per-tensor progress bar on the command line
        transformers.utils.logging.disable_progress_bar()
    try:
        with _LOAD_LOCK:  # from_pretrained builds on the meta device process-wide: one at a time
            model = cls.from_pretrained(
                str(directory),
                attn_implementation="eager",
                local_files_only=True,
                use_safetensors=True,
            )
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0]
        if "torchvision" in text:
            raise IntakeError(_transformers_broken(exc)) from None
        raise IntakeError(f"cannot load Hugging Face model from {directory}: {text}") from None
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    wrapped = HFModel(model, hf_default_loss(model))
    wrapped.curvprof_config = {"arch": type(model).__name__, "hf_config": config}
    wrapped.curvprof_kinds = hf_kinds(wrapped)
    wrapped.curvprof_transposed = hf_transposed(wrapped)
    return wrapped


def _check_hf_size(transformers: Any, cls: Any, directory: Path, max_parameters: int) -> None:
    from workers.intake.limits import over_limit

    try:
        hf_config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
        build = getattr(cls, "_from_config", None) or cls.from_config
        with torch.device("meta"):
            meta = build(hf_config)
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        raise IntakeError(f"cannot build Hugging Face config in {directory}: {text}") from None
    count = sum(p.numel() for p in meta.parameters())
    if count > max_parameters:
        raise IntakeError(
            over_limit(
                f"{type(meta).__name__} model parameters",
                count,
                max_parameters,
                "MAX_MODEL_PARAMETERS",
            )
        )


_CLASSIFICATION_HEADS = (
    "ForSequenceClassification",
    "ForImageClassification",
    "ForAudioClassification",
    "ForMultipleChoice",
)
_TOKEN_HEADS = (
    "LMHeadModel",
    "ForCausalLM",
    "ForMaskedLM",
    "ForTokenClassification",
    "ForConditionalGeneration",
    "ForSeq2SeqLM",
)


def _is_regression_head(model: nn.Module) -> bool:
    name = type(model).__name__
    config = getattr(model, "config", None)
    problem = getattr(config, "problem_type", None)
    return name.endswith(_CLASSIFICATION_HEADS) and (
        problem == "regression" or (problem is None and getattr(config, "num_labels", 2) == 1)
    )


def hf_default_loss(model: nn.Module) -> str:
    """The loss that fits the head, as transformers itself computes it from ``labels``.

    Sequence / image classification: ``cross_entropy`` over examples; regression
    (``problem_type="regression"``, or one label): ``mse``. Causal and masked LM, token
    classification and encoder-decoders (on the decoder's logits): ``lm``, the cross-entropy
    per labelled token (targets of -100 ignored), mean over those tokens. A bare encoder:
    ``mse`` on the last hidden state.
    """
    name = type(model).__name__
    if _is_regression_head(model):
        return "mse"
    if name.endswith(_CLASSIFICATION_HEADS):
        return "cross_entropy"
    get_out = getattr(model, "get_output_embeddings", None)
    if name.endswith(_TOKEN_HEADS) or (callable(get_out) and get_out() is not None):
        return "lm"
    return "mse"


def hf_kinds(model: nn.Module) -> dict[str, str]:
    """``"<module>.weight"`` -> kind for BERT-, GPT-2-, ViT- and LLaMA-style module names."""
    from workers.zoo import kinds_from_modules

    return kinds_from_modules(model, _hf_kind)


def hf_transposed(model: nn.Module) -> list[str]:
    """Weights of GPT-2 ``Conv1D`` modules, stored (in, out): the inventory transposes them."""
    return [f"{p}.weight" for p, m in model.named_modules() if type(m).__name__ == "Conv1D"]


def _hf_kind(path: str, module: nn.Module, is_last_linear: bool) -> str | None:
    del is_last_linear  # a bare encoder's last Linear (e.g. the pooler) is not a head
    if isinstance(module, nn.Conv2d):
        return "conv"
    if not (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"):
        return None
    parts = path.split(".")
    last = parts[-1]
    parent = parts[-2] if len(parts) > 1 else ""
    grandparent = parts[-3] if len(parts) > 2 else ""
    if last == "dense":  # BERT / ViT: attention.output.dense, intermediate.dense, output.dense
        if parent == "output":
            return "attn_o" if grandparent == "attention" else "mlp_down"
        return "mlp_up" if parent == "intermediate" else "linear"
    if last == "c_proj":  # GPT-2: attn.c_proj vs mlp.c_proj
        return "attn_o" if parent in _ATTN_PARENTS else "mlp_down"
    for names, kind in (
        (_QKV, "attn_qkv"),
        (_Q, "attn_q"),
        (_K, "attn_k"),
        (_V, "attn_v"),
        (_O, "attn_o"),
        (_UP, "mlp_up"),
        (_DOWN, "mlp_down"),
        (_HEAD, "head"),
    ):
        if last in names:
            return kind
    return "linear"
