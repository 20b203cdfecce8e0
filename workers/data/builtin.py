"""Built-in data sets: ``digits`` (sklearn 8x8), ``text`` (characters of stdlib source) and
``synthetic`` (teacher-student). All are deterministic functions of their arguments."""

from __future__ import annotations

import hashlib
import inspect
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from api_schemas.enums import BUILTIN_DATASETS
from workers.data.batch import Dataset
from workers.errors import IntakeError

TEXT_VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
"""Newline + printable ASCII (96 symbols); token id = index in this string."""

TEXT_FILES = (
    "argparse.py",
    "ast.py",
    "collections/__init__.py",
    "dataclasses.py",
    "datetime.py",
    "difflib.py",
    "enum.py",
    "functools.py",
    "inspect.py",
    "logging/__init__.py",
    "pathlib.py",
    "pickle.py",
    "random.py",
    "shutil.py",
    "statistics.py",
    "subprocess.py",
    "tarfile.py",
    "textwrap.py",
    "threading.py",
    "typing.py",
    "zipfile.py",
)
"""Standard-library sources read in this order (``x.py`` or ``x/__init__.py``; missing skipped)."""

TEXT_CAP = 1_000_000
_TEST_FRACTION = 0.2


def load_builtin(name: str, *, seed: int = 0, split: str = "train", **kw: Any) -> Dataset:
    """``digits`` (``flatten``), ``text`` (``seq_len``, ``max_chars``) or ``synthetic``
    (``task``, ``n``, ``dim``, ``classes``, ``hidden``, ``noise``), split ``train``/``test``."""
    if split not in ("train", "test"):
        raise IntakeError(f"unknown split {split!r}; expected train or test")
    if name not in BUILTIN_DATASETS:
        raise IntakeError(
            f"unknown built-in data set {name!r}; expected one of {', '.join(BUILTIN_DATASETS)}"
        )
    loader: Callable[..., Dataset] = globals()[f"_{name}"]  # each set's loader is _<name>
    try:
        inspect.signature(loader).bind(seed=seed, split=split, **kw)
    except TypeError as exc:
        raise IntakeError(f"bad option for data set {name!r}: {exc}") from None
    return loader(seed=seed, split=split, **kw)


def _digits(*, seed: int, split: str, flatten: bool = False) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).clip(0.0, 1.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=_TEST_FRACTION, random_state=seed, stratify=y
    )
    xs, ys = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    inputs = torch.from_numpy(np.ascontiguousarray(xs))
    if not flatten:
        inputs = inputs.reshape(-1, 1, 8, 8)
    sha = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    meta = {"classes": 10, "split": split, "seed": seed, "flatten": flatten, "n_total": len(y)}
    return Dataset(inputs, torch.from_numpy(ys), None, "digits", sha, meta)


def text_corpus(max_chars: int = TEXT_CAP) -> tuple[str, list[str]]:
    """The corpus (characters outside ``TEXT_VOCAB`` dropped, tabs as 4 spaces) and its files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    allowed = set(TEXT_VOCAB)
    parts: list[str] = []
    used: list[str] = []
    total = 0
    for rel in TEXT_FILES:
        path = root / rel
        if not path.is_file():
            path = root / rel.removesuffix(".py") / "__init__.py"
        if not path.is_file():
            continue
        raw = path.read_text(encoding="utf-8", errors="replace").replace("\t", "    ")
        text = "".join(ch for ch in raw if ch in allowed)
        parts.append(text[: max_chars - total])
        used.append(str(path.relative_to(root)))
        total += len(parts[-1])
        if total >= max_chars:
            break
    if not total:
        raise IntakeError(f"no standard-library sources found under {root}")
    return "".join(parts), used


def _text(*, seed: int, split: str, seq_len: int = 64, max_chars: int = TEXT_CAP) -> Dataset:
    if seq_len < 1:
        raise IntakeError(f"text: seq_len must be positive, got {seq_len}")
    corpus, files = text_corpus(max_chars)
    lut = np.zeros(128, dtype=np.int64)
    lut[[ord(c) for c in TEXT_VOCAB]] = np.arange(len(TEXT_VOCAB))
    ids = lut[np.frombuffer(corpus.encode("ascii"), dtype=np.uint8)]
    n_windows = (len(ids) - 1) // seq_len
    n_test = max(1, int(n_windows * _TEST_FRACTION))
    lo, hi = (0, n_windows - n_test) if split == "train" else (n_windows - n_test, n_windows)
    if hi <= lo:
        raise IntakeError(
            f"text: corpus of {len(ids)} characters is too short for seq_len {seq_len}"
        )
    starts = np.arange(lo, hi) * seq_len
    offsets = starts[:, None] + np.arange(seq_len)[None, :]
    inputs, targets = torch.from_numpy(ids[offsets]), torch.from_numpy(ids[offsets + 1])
    meta = {
        "vocab": TEXT_VOCAB,
        "vocab_size": len(TEXT_VOCAB),
        "seq_len": seq_len,
        "split": split,
        "seed": seed,
        "files": files,
        "chars": len(corpus),
        "split_rule": "last 20% of windows",
    }
    sha = hashlib.sha256(corpus.encode("ascii")).hexdigest()
    return Dataset(inputs, targets, None, "text", sha, meta)


def _synthetic(
    *,
    seed: int,
    split: str,
    task: str = "classification",
    n: int = 2048,
    dim: int = 32,
    classes: int = 10,
    hidden: int = 64,
    noise: float = 0.0,
) -> Dataset:
    """Teacher: a random tanh net; ``classes`` = number of classes or regression outputs."""
    if task not in ("classification", "regression"):
        raise IntakeError(f"synthetic: task must be classification or regression, got {task!r}")
    if min(n, dim, classes, hidden) < 1:
        raise IntakeError("synthetic: n, dim, classes and hidden must be positive")
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(hidden, dim, generator=gen) / dim**0.5
    w2 = torch.randn(classes, hidden, generator=gen) / hidden**0.5
    n_test = max(1, n // 4)
    x = torch.randn(n + n_test, dim, generator=gen)
    out = torch.tanh(x @ w1.T) @ w2.T
    out = out + noise * torch.randn(out.shape, generator=gen)
    targets = out.argmax(dim=1) if task == "classification" else out
    part = slice(0, n) if split == "train" else slice(n, n + n_test)
    meta = {
        "task": task,
        "seed": seed,
        "split": split,
        "n": n,
        "dim": dim,
        "classes": classes,
        "hidden": hidden,
        "noise": noise,
    }
    return Dataset(x[part].contiguous(), targets[part].contiguous(), None, "synthetic", None, meta)
