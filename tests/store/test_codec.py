"""The stored form of a layer profile: packing and unpacking give back the profile the
engine produced, bit for bit (NaN and ±Inf too), and a damaged blob is refused."""

from __future__ import annotations

import json
import math
import zlib

import pytest
import torch
from pydantic import ValidationError

from api_schemas import LayerProfile, ProfileSettings
from service.store.codec import pack_profile, unpack_profile, unpack_profile_json
from workers.curvature.engine import profile_layers
from workers.zoo import build_model


@pytest.fixture(scope="module")
def profile() -> LayerProfile:
    """A real profile of a tiny zoo MLP's head, with non-finite h values put in."""
    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "in_features": 6, "widths": [5], "classes": 4}).eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 4, (16,), generator=gen)
    settings = ProfileSettings(top_k=3, lanczos_steps=0, variants=["ggn"], min_fit_points=3)
    (measured,) = profile_layers(model, x, y, ["head"], settings)
    data = measured.model_dump(mode="python")
    data["h"][:2] = [math.nan, -math.inf]  # arrays keep non-finite entries (scalars: None)
    return LayerProfile.model_validate(data)


def _exact(p: LayerProfile) -> str:
    """Exact JSON: float repr round-trips, -0.0 and NaN spelled out."""
    return json.dumps(p.model_dump(mode="python"))


def test_round_trip_gives_back_the_original_profile(profile: LayerProfile) -> None:
    back = unpack_profile(pack_profile(profile))
    assert _exact(back) == _exact(profile)
    assert math.isnan(back.h[0]) and back.h[1] == -math.inf
    assert back.sigma == profile.sigma and len(back.sigma) > 0


def test_extra_keys_come_first_and_the_profile_follows(profile: LayerProfile) -> None:
    raw = unpack_profile_json(pack_profile(profile), id=7, job_id="abc")
    data = json.loads(raw)
    assert list(data)[:2] == ["id", "job_id"] and (data["id"], data["job_id"]) == (7, "abc")
    rest = {k: v for k, v in data.items() if k not in ("id", "job_id")}
    assert _exact(LayerProfile.model_validate(rest)) == _exact(profile)


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[: len(blob) // 2],  # truncated
        lambda blob: blob[:20] + bytes([blob[20] ^ 0xFF]) + blob[21:],  # a flipped byte
        lambda blob: b"not zlib at all",
        lambda blob: zlib.compress(b'{"name": "head"}'),  # valid zlib, not a profile
    ],
    ids=["truncated", "flipped-byte", "not-zlib", "not-a-profile"],
)
def test_a_corrupted_blob_is_refused(profile: LayerProfile, damage: object) -> None:
    blob = damage(pack_profile(profile))  # type: ignore[operator]
    with pytest.raises((zlib.error, ValidationError)):
        unpack_profile(blob)
