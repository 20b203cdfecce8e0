"""Wire models for curvature profiles: one layer, and a whole model.

Undefined numbers (a fit over too few points, an empty set) travel as ``null``;
the reason is always in ``flags``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api_schemas.enums import DEFAULT_VARIANTS as DEFAULT_VARIANTS
from api_schemas.enums import DTypeName as DTypeName
from api_schemas.enums import LossName as LossName
from api_schemas.enums import NamedLoss as NamedLoss
from api_schemas.enums import PreconditionerMode as PreconditionerMode
from api_schemas.enums import VariantName as VariantName
from api_schemas.wire import Text

if TYPE_CHECKING:
    import pandas as pd

LayerKind = Literal[
    "conv",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_o",
    "attn_qkv",
    "mlp_up",
    "mlp_down",
    "head",
    "linear",
]
HkRoute = Literal["ggn_jvp", "output_double_backward", "weight_double_backward"]


def _nan_to_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class LanczosSummary(BaseModel):
    """Top eigenvalues of the layer-block Hessian from single-vector Lanczos."""

    eigenvalues: list[float] = Field(default_factory=list, description="Ritz values, descending")
    residuals: list[float] = Field(
        default_factory=list, description="|beta_m s_i[m]| per Ritz value"
    )
    converged: list[bool] = Field(default_factory=list)
    n_converged: int = 0
    steps: int = 0
    tol: float = 0.0
    most_negative: list[float] = Field(default_factory=list)


class PreconditionerParams(BaseModel):
    """T(sigma; alpha) = sigma / (kappa * (sigma/scale)^alpha + damping); docs/engine.md,
    step 9 (Preconditioner)."""

    mode: PreconditionerMode
    alpha: float | None
    kappa: float | None
    damping: float | None
    sigma_scale: float | None = Field(1.0, description="sigma is divided by this before T")
    coefficients: list[float] = Field(default_factory=list, description="T at the measured sigma_k")

    @field_validator("alpha", "kappa", "damping", "sigma_scale", mode="before")
    @classmethod
    def _finite(cls, value: object) -> object:
        return _nan_to_none(value)


class Decomposition(BaseModel):
    """Additive slope decomposition of alpha, each over the alpha fit set; docs/engine.md,
    step 4 (Kronecker/EF projections)."""

    alpha_exact: float | None = None
    alpha_kron: float | None = None
    alpha_ef: float | None = None
    alpha_ggn: float | None = None
    phi_kron_slope: float | None = Field(None, description="slope(log Phi^Kron ~ log sigma)")
    chi_slope: float | None = Field(None, description="slope(log h_exact/h_Kron ~ log sigma)")
    cosine_slope: float | None = Field(None, description="slope(log c_k ~ log sigma)")
    beta: float | None = Field(None, description="slope(log Lambda_k ~ log sigma) (paper)")
    phi_paper: float | None = Field(None, description="slope(log Phi^paper ~ log sigma)")

    @field_validator("*", mode="before")
    @classmethod
    def _finite(cls, value: object) -> object:
        return _nan_to_none(value)


class LayerProfile(BaseModel):
    """Everything measured for one weight matrix; docs/engine.md says what each number means."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: LayerKind
    parameter: str = Field(..., description="name of the parameter the matrix lives in")
    shape: tuple[int, int]
    rows: tuple[int, int] | None = Field(None, description="row block of a fused parameter")
    positions: int = Field(1, description="T: positions per example (conv output pixels, tokens)")
    rank_num: int = 0
    k: int = Field(0, description="number of directions measured, min(top_k, numerical rank)")
    sigma: list[float]
    h: list[float] = Field(
        ..., description="exact directional curvature <V_k, H V_k>, order of sigma"
    )
    route: HkRoute | None = Field(
        None,
        description="how h was computed: ggn_jvp (the block equals its Gauss-Newton part; "
        "one vmapped JVP), output_double_backward or weight_double_backward (docs/engine.md)",
    )
    route_reason: str | None = Field(
        None, description="why the GGN-exact route was not taken, e.g. 'gelu above the layer'"
    )
    h_ggn: list[float] = Field(default_factory=list)
    h_ef: list[float] = Field(default_factory=list)
    h_mc: list[float] = Field(default_factory=list)
    h_kron_ef: list[float] = Field(default_factory=list)
    h_kron_mc: list[float] = Field(default_factory=list)
    phi: list[float] = Field(default_factory=list, description="Phi_k^Kron = h_kron_ef / sigma^2")
    cosines: list[float] = Field(default_factory=list, description="alignment cosines c_k")
    chi: list[float] = Field(default_factory=list, description="h_exact / h_kron_ef")
    residuals: list[float] = Field(
        default_factory=list, description="||H V_k - h_k V_k|| / ||H V_k||"
    )
    compressed: list[list[float]] = Field(
        default_factory=list,
        description="K x K compressed matrix M_jk = <V_j, H[V_k]> (row j); empty on the output "
        "route",
    )
    eigenvalues: list[float] = Field(default_factory=list, description="Lanczos top eigenvalues")
    lanczos: LanczosSummary | None = None
    n_valid: int = 0
    n_neg: int = 0
    hvp_noise: float | None = None
    eps_off: float | None = None
    alpha: float | None = None
    alpha_intercept: float | None = None
    r2_alpha: float | None = None
    alpha_se: float | None = None
    alpha_ci_t: tuple[float, float] | None = None
    alpha_ci_boot: tuple[float, float] | None = None
    alpha_theilsen: float | None = None
    alpha_excl_k1: float | None = None
    alpha_merged: float | None = None
    gamma: float | None = None
    r2_gamma: float | None = None
    s: float | None = Field(None, description="s_dir: slope of rank-sorted h (the paper's s)")
    r2_s: float | None = None
    s_unsorted: float | None = None
    s_eig: float | None = None
    r2_s_eig: float | None = None
    predicted_s: float | None = None
    triangle_error: float | None = None
    triangle_relative_error: float | None = None
    triangle_relative_error_unsorted: float | None = None
    triangle_bound: float | None = None
    bic: dict[str, float] = Field(default_factory=dict)
    pr_h: float | None = None
    pr_sigma: float | None = None
    pr_sigma2: float | None = None
    pr_lambda: float | None = None
    zeta_pred: float | None = None
    zeta_pred_k: float | None = None
    decomposition: Decomposition | None = None
    preconditioner: list[PreconditionerParams] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    wall_seconds: float | None = None

    @field_validator(
        "alpha",
        "alpha_intercept",
        "r2_alpha",
        "alpha_se",
        "alpha_theilsen",
        "alpha_excl_k1",
        "alpha_merged",
        "gamma",
        "r2_gamma",
        "s",
        "r2_s",
        "s_unsorted",
        "s_eig",
        "r2_s_eig",
        "predicted_s",
        "triangle_error",
        "triangle_relative_error",
        "triangle_relative_error_unsorted",
        "triangle_bound",
        "pr_h",
        "pr_sigma",
        "pr_sigma2",
        "pr_lambda",
        "zeta_pred",
        "zeta_pred_k",
        "hvp_noise",
        "eps_off",
        mode="before",
    )
    @classmethod
    def _finite(cls, value: object) -> object:
        return _nan_to_none(value)

    @field_validator("alpha_ci_t", "alpha_ci_boot", mode="before")
    @classmethod
    def _finite_pair(cls, value: object) -> object:
        if value is None:
            return None
        pair: tuple[object, ...] = tuple(value)  # type: ignore[arg-type]
        if any(not math.isfinite(float(x)) for x in pair):  # type: ignore[arg-type]
            return None
        return pair


class Provenance(BaseModel):
    """Where a profile's numbers came from: the checkpoint, the measurement batch, the
    library versions, and the node, host and torch device that computed them. The store
    keeps one with every layer (``service.store.provenance``)."""

    checkpoint_sha256: Annotated[str | None, Field(max_length=64)] = None
    data_name: str | None = None
    data_sha256: Annotated[str | None, Field(max_length=64)] = None
    data_seed: int = 0
    data_indices: list[int] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    node_id: Annotated[str | None, Field(max_length=64, description="the Ray node")] = None
    hostname: Annotated[str | None, Field(max_length=255)] = None
    device: Annotated[
        str | None,
        Field(
            max_length=128,
            description="the torch device that computed the numbers, e.g. 'cpu' or "
            "'cuda:0 (NVIDIA H200)'; null where it was not recorded",
        ),
    ] = None


class MeasurementSettings(BaseModel):
    """The measurement settings every number of a profile depends on, but the loss.

    Declared once: :class:`ProfileSettings` (what a profile records) adds the loss it was
    measured with; the job spec (``api_schemas.jobs.ProfileRequest``) adds the loss it names,
    if any, and what to measure; docs/engine.md says what each setting changes."""

    batch_size: int = Field(default=2048, ge=1)
    micro_batch_size: int | None = Field(default=None, ge=1)
    top_k: int = Field(default=20, ge=1, le=1000)
    lanczos_steps: int = Field(default=20, ge=0, le=2000)
    dtype: DTypeName = "float64"
    seed: int = 0
    layers: Text | None = Field(default=None, description="fnmatch glob on layer names")
    variants: list[VariantName] = Field(default_factory=lambda: list(DEFAULT_VARIANTS))
    rank_cutoff: float = Field(
        default=1e-6,
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="directions with sigma_k <= rank_cutoff * sigma_1 are below numerical rank",
    )
    min_fit_points: int = Field(
        default=8, ge=3, le=1000, description="fewest points a fit is made on"
    )
    mode: Literal["eval"] = "eval"
    hvp_diagnostics: bool = Field(
        default=True,
        description="also the K x K compressed matrix, HVP noise and residuals; False: h_k "
        "alone, through the layer output on single-use linear layers (faster)",
    )


class ProfileSettings(MeasurementSettings):
    """The measurement settings of a profile: the loss it was measured with, and the rest."""

    loss: LossName = "cross_entropy"


class Profile(BaseModel):
    """A whole-model curvature profile."""

    settings: ProfileSettings
    layers: list[LayerProfile]
    provenance: Provenance = Field(default_factory=Provenance)
    architecture: str | None = None
    skipped: dict[str, str] = Field(default_factory=dict, description="layer name -> reason")
    wall_seconds: float | None = None

    # Flat aliases that the issue names (loss, batch size, dtype, seed, K).
    @property
    def loss(self) -> str:
        return self.settings.loss

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def dtype(self) -> str:
        return self.settings.dtype

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def top_k(self) -> int:
        return self.settings.top_k

    def to_pandas(self, *, arrays: bool = False) -> pd.DataFrame:
        """One row per layer with every scalar and flag (the arrays too with ``arrays=True``);
        needs pandas (``pip install 'curvprof[pandas]'``). The columns:
        ``workers.tracking.frames``, which does the conversion."""
        from workers.tracking.frames import layers_frame

        return layers_frame(self.layers, arrays=arrays)
