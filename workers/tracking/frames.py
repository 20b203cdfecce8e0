"""One row per layer: a pandas DataFrame of every scalar and flag of a set of layer profiles.

The one place where profiles become tables: ``Profile.to_pandas()`` and the client's
``layers_df`` both call :func:`layers_frame`. pandas is the optional ``[pandas]`` extra,
imported on the first call.

Columns, in the order of the model's fields:

- scalars (numbers, strings, ``None``) as they are; the storage fields of a stored row too
  (``id``, ``job_id``, ``step``, ...);
- pairs split in two: ``shape`` -> ``shape_m``, ``shape_n``; ``rows`` -> ``rows_start``,
  ``rows_stop``; a confidence interval ``alpha_ci_t`` -> ``alpha_ci_t_lo``, ``alpha_ci_t_hi``;
- nested summaries flattened with a prefix: ``decomposition_alpha_kron``,
  ``lanczos_n_converged``; ``bic`` -> ``bic_<model>``;
- ``flags`` as a list, plus one boolean column ``flag_<name>`` per flag any layer carries;
- with ``arrays=True`` the per-direction arrays (``sigma``, ``h``, ``eigenvalues``,
  ``lanczos_residuals``, ...) as numpy arrays and ``preconditioner`` as a list of dicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd

PAIR_NAMES: dict[str, tuple[str, str]] = {
    "shape": ("shape_m", "shape_n"),
    "rows": ("rows_start", "rows_stop"),
}
SCALAR_TYPES = (bool, int, float, str)


def _pair_names(name: str) -> tuple[str, str]:
    return PAIR_NAMES.get(name, (f"{name}_lo", f"{name}_hi"))


def _flatten(model: BaseModel, prefix: str, arrays: bool, out: dict[str, Any]) -> None:
    import numpy as np

    for name in type(model).model_fields:
        value = getattr(model, name)
        key = prefix + name
        if name == "flags" and not prefix:
            out[key] = list(value)
        elif value is None or isinstance(value, SCALAR_TYPES):
            out[key] = value
        elif isinstance(value, tuple) and len(value) == 2:
            lo, hi = _pair_names(key)
            out[lo], out[hi] = value
        elif isinstance(value, BaseModel):
            _flatten(value, f"{key}_", arrays, out)
        elif isinstance(value, dict):
            for sub, number in value.items():
                out[f"{key}_{sub}"] = number
        elif isinstance(value, list) and arrays:
            if value and isinstance(value[0], BaseModel):
                out[key] = [item.model_dump() for item in value]
            else:
                out[key] = np.asarray(value)


def layer_record(layer: BaseModel, *, arrays: bool = False) -> dict[str, Any]:
    """The columns of one layer (a LayerProfile, or a stored LayerRow / LayerBrief)."""
    out: dict[str, Any] = {}
    _flatten(layer, "", arrays, out)
    return out


def layers_frame(layers: Iterable[BaseModel], *, arrays: bool = False) -> pd.DataFrame:
    """A DataFrame with one row per layer (see the module docstring for the columns)."""
    import pandas as pd

    records = [layer_record(layer, arrays=arrays) for layer in layers]
    flags = sorted({flag for record in records for flag in record.get("flags", [])})
    for record in records:
        carried = set(record.get("flags", []))
        record.update({f"flag_{flag}": flag in carried for flag in flags})
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    return pd.DataFrame.from_records(records, columns=list(columns))
