"""Tiny random models of every architecture researchers bring, built offline, with data.

Hugging Face models are saved with ``save_pretrained`` (config.json + model.safetensors);
the two torchvision-style convnets, which cannot come from torchvision or timm here, are
written below and exported with ``torch.export`` (a static batch for the ResNet, a dynamic
one for the ConvNeXt block). Data files use the Hugging Face array names (``input_ids``,
``pixel_values``, ``labels``, ``attention_mask``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

VOCAB = 24
SEQ = 5
N = 8  # examples in every data file (the measurement batch)
STATIC_BATCH = 4  # the ResNet's export batch: the engine runs micro-batches of 4


@dataclass(frozen=True)
class Arch:
    name: str
    loss: str  # the loss its head implies
    build: Callable[[Path], Path]  # writes the checkpoint, returns what `profile` takes
    data: Callable[[Path], Path]


def _hf(cls_name: str, config_cls: str, **config: Any) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        import transformers

        torch.manual_seed(0)
        model = getattr(transformers, cls_name)(getattr(transformers, config_cls)(**config))
        out = root / cls_name
        model.save_pretrained(out, safe_serialization=True)
        return out

    return build


def _tokens(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(3, VOCAB, size=(N, SEQ))
    mask = np.ones((N, SEQ), dtype=np.int64)
    mask[0, -2:] = 0  # one padded example: the mask reaches the model and the loss
    return ids, mask


def _sequence_labels(root: Path) -> Path:
    rng = np.random.default_rng(1)
    ids, mask = _tokens(rng)
    out = root / "seq.npz"
    np.savez(out, input_ids=ids, attention_mask=mask, labels=rng.integers(0, 3, size=N))
    return out


def _token_labels(root: Path) -> Path:
    rng = np.random.default_rng(2)
    ids, mask = _tokens(rng)
    out = root / "tok.npz"
    np.savez(out, input_ids=ids, attention_mask=mask, labels=rng.integers(0, 3, size=(N, SEQ)))
    return out


def _regression(root: Path) -> Path:
    rng = np.random.default_rng(3)
    ids, mask = _tokens(rng)
    out = root / "reg.npz"
    np.savez(out, input_ids=ids, attention_mask=mask, labels=rng.normal(size=(N, 1)))
    return out


def _causal(root: Path) -> Path:
    """Next-token windows; the last target is -100 so that Hugging Face's own shifted loss
    (``labels=`` on the unshifted ids) is the same function (tests/models/test_dense.py)."""
    rng = np.random.default_rng(4)
    tokens = rng.integers(3, VOCAB, size=(N, SEQ + 1))
    targets = tokens[:, 1:].copy()
    targets[:, -1] = -100
    out = root / "causal.npz"
    np.savez(out, input_ids=tokens[:, :-1], labels=targets)
    return out


def _seq2seq(root: Path) -> Path:
    rng = np.random.default_rng(5)
    ids, mask = _tokens(rng)
    out = root / "s2s.npz"
    np.savez(out, input_ids=ids, attention_mask=mask, labels=rng.integers(3, VOCAB, size=(N, SEQ)))
    return out


def _images(channels: int, size: int, seed: int) -> Callable[[Path], Path]:
    def data(root: Path) -> Path:
        rng = np.random.default_rng(seed)
        out = root / f"images{channels}x{size}.npz"
        pixels = rng.normal(size=(N, channels, size, size)).astype(np.float32)
        np.savez(out, pixel_values=pixels, labels=rng.integers(0, 3, size=N))
        return out

    return data


_BERT = {
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "hidden_size": 8,
    "intermediate_size": 12,
    "vocab_size": VOCAB,
    "max_position_embeddings": 16,
}
_DECODER = {
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "hidden_size": 8,
    "intermediate_size": 12,
    "vocab_size": VOCAB,
    "max_position_embeddings": 16,
}


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv-BN-ReLU-conv-BN plus a 1x1 projection."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.downsample(x))


class TinyResNet(nn.Module):
    """Stem conv, one BasicBlock, global average pool, ``fc`` (torchvision's names)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.layer1 = BasicBlock(3, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer1(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(y.mean(dim=(2, 3)))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt: depthwise 3x3 conv, LayerNorm over channels, pointwise MLP, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 2 * dim)
        self.pwconv2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(torch.nn.functional.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 2, stride=2)
        self.block = ConvNeXtBlock(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


def eager_model(factory: Callable[[], nn.Module]) -> nn.Module:
    """The model a ``.pt2`` below was exported from (seed 0), in eval mode."""
    torch.manual_seed(0)
    model = factory().eval()
    with torch.no_grad():  # non-trivial running statistics for the eval-mode BatchNorms
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _exported(
    factory: Callable[[], nn.Module], name: str, *, static: bool
) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        model = eager_model(factory)
        x = torch.randn(STATIC_BATCH, 1, 8, 8)
        if static:  # the default: every dimension of x fixed, batch included
            program = torch.export.export(model, (x,))
        else:
            dims = {"x": {0: torch.export.Dim("batch")}}
            program = torch.export.export(model, (x,), dynamic_shapes=dims)
        out = root / f"{name}.pt2"
        torch.export.save(program, out)
        return out

    return build


WORDS = [f"w{i}" for i in range(VOCAB - 1)]


def with_tokenizer(build: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """The checkpoint plus a word-level ``tokenizer.json`` built here with ``tokenizers``."""

    def build_with_tokenizer(root: Path) -> Path:
        from tokenizers import Tokenizer, models, pre_tokenizers

        (root / "text").mkdir(exist_ok=True)
        out = build(root / "text")
        vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.save(str(out / "tokenizer.json"))
        return out

    return build_with_tokenizer


def corpus(root: Path) -> Path:
    """Plain text of the tokenizer's words (and one unknown word), for ``--data x.txt``."""
    rng = np.random.default_rng(9)
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=N * SEQ + 3)]
    words[7] = "unseen"
    out = root / "corpus.txt"
    out.write_text(" ".join(words) + "\n", encoding="utf-8")
    return out


_GPT2 = _hf(
    "GPT2LMHeadModel",
    "GPT2Config",
    n_layer=1,
    n_head=2,
    n_embd=8,
    vocab_size=VOCAB,
    n_positions=16,
    bos_token_id=0,
    eos_token_id=0,
)

ARCHS: list[Arch] = [
    Arch(
        "bert",
        "cross_entropy",
        _hf("BertForSequenceClassification", "BertConfig", num_labels=3, **_BERT),
        _sequence_labels,
    ),
    Arch(
        "roberta",
        "lm",  # token classification: cross-entropy per labelled token
        _hf(
            "RobertaForTokenClassification",
            "RobertaConfig",
            num_labels=3,
            pad_token_id=1,
            **{**_BERT, "max_position_embeddings": 16},
        ),
        _token_labels,
    ),
    Arch(
        "distilbert",
        "mse",  # one label: regression
        _hf(
            "DistilBertForSequenceClassification",
            "DistilBertConfig",
            n_layers=1,
            n_heads=2,
            dim=8,
            hidden_dim=12,
            vocab_size=VOCAB,
            max_position_embeddings=16,
            num_labels=1,
        ),
        _regression,
    ),
    Arch("gpt2", "lm", _GPT2, _causal),
    Arch("gpt2_text", "lm", with_tokenizer(_GPT2), corpus),
    Arch(
        "gpt_neox",
        "lm",
        _hf("GPTNeoXForCausalLM", "GPTNeoXConfig", **_DECODER),
        _causal,
    ),
    Arch(
        "llama",
        "lm",
        _hf("LlamaForCausalLM", "LlamaConfig", num_key_value_heads=1, **_DECODER),
        _causal,
    ),
    Arch(
        "qwen2",
        "lm",
        _hf("Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=1, **_DECODER),
        _causal,
    ),
    Arch(
        "t5",
        "lm",  # on the decoder's logits; decoder inputs are the shifted labels
        _hf(
            "T5ForConditionalGeneration",
            "T5Config",
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            d_model=8,
            d_kv=4,
            d_ff=12,
            vocab_size=VOCAB,
            decoder_start_token_id=0,
            pad_token_id=0,
        ),
        _seq2seq,
    ),
    Arch(
        "vit",
        "cross_entropy",
        _hf(
            "ViTForImageClassification",
            "ViTConfig",
            num_hidden_layers=1,
            num_attention_heads=2,
            hidden_size=8,
            intermediate_size=12,
            image_size=8,
            patch_size=4,
            num_channels=1,
            num_labels=3,
        ),
        _images(1, 8, 6),
    ),
    Arch("resnet", "cross_entropy", _exported(TinyResNet, "resnet", static=True), _images(1, 8, 7)),
    Arch(
        "convnext",
        "cross_entropy",
        _exported(TinyConvNeXt, "convnext", static=False),
        _images(1, 8, 8),
    ),
]
