"""Smoke test of the peer benchmark (bench/): imports and the cheapest piece on a tiny model.

Runs without the ``bench`` extra; peer parts are skipped when the peers are not installed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench import cases, eigen, hk, peers, timing, whole
from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.inventory import layer_inventory
from workers.curvature.measurement import make_batch
from workers.curvature.routes import ggn_refusal


def tiny_setup() -> cases.Setup:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).to(torch.float64)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(32, 6), torch.randint(0, 4, (32,))
    batch = make_batch(x, y, "cross_entropy", dtype=torch.float64)
    specs, _ = layer_inventory(model, batch.split(1, limit=1)[0].forward)
    spec = specs[0]
    grads, _ = layer_gradients(model, [batch], [spec])
    svd = gradient_svd(grads[spec.name], 5)
    dirs = [spec.embed(torch.outer(svd.U[:, k], svd.V[:, k])) for k in range(svd.k)]
    return cases.Setup(
        "tiny",
        model,
        batch,
        batch.inputs,
        batch.targets,
        "cross_entropy",
        spec,
        specs,
        svd.U,
        svd.V,
        dirs,
    )


def test_modules_import_and_modes_are_defined() -> None:
    import bench.__main__
    import bench.scaling
    import bench.store
    from bench import campaign

    assert set(campaign.MODES) == {"quick", "full"} and bench.__main__.main
    assert bench.store.QUERIES and bench.scaling.run_case
    assert set(peers.available()) == {"pyhessian", "curvlinops", "eigenthings", "backpack"}


def test_the_campaign_cuts_models_and_overrides_batches() -> None:
    from bench import campaign

    cfg = campaign.configured("full", {"cnn", "mlp"}, {"mlp": 512})
    assert cfg["whole_models"] == ["cnn", "mlp"] and cfg["hk_models"] == ["cnn", "mlp"]
    assert cfg["batch"] == {**campaign.MODES["full"]["batch"], "mlp": 512}
    assert campaign.MODES["full"]["batch"]["mlp"] == 1024  # the mode itself is untouched
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        campaign.configured("full", {"vgg"})


def test_curvprof_hk_matches_the_floor_and_timing_is_paired() -> None:
    s = tiny_setup()
    splits: list[tuple[float, float]] = []
    r = timing.paired(hk.floor_method(s, splits), s.gradient, 2)
    h_floor = r["out"]
    h_cp = hk.curvprof_method(s)()
    assert cases.rel_diff(h_cp, h_floor) <= 1e-12
    assert len(r["ratios"]) == 2 and r["ratio"] > 0 and len(splits) == 3
    for name, method in hk.methods(s).items():  # every curvprof row (peers: below)
        if name.startswith(("curvprof", "ggn", "output")):
            assert cases.rel_diff(method(), h_floor) <= 1e-12, name


def test_lanczos_drivers_agree_with_dense_eigh() -> None:
    s = tiny_setup()
    ref, how = eigen.reference(s)  # 48 entries: dense eigh
    assert how == "dense eigh"
    res = eigen.curvprof_method(s, tol=1e-10)()
    n = min(len(res["eigenvalues"]), 5)
    assert abs(res["eigenvalues"][:n] - ref[:n]).max() <= 1e-8 * abs(ref[0])
    from workers.curvature.hvp import BlockHessian, layer_matvec

    block = BlockHessian(s.model, [s.batch], s.spec.parameter)
    dim, mv = layer_matvec(block, s.spec)
    vals = whole.lanczos_steps(mv, dim, dim)  # a full Krylov space: every eigenvalue
    assert abs(vals[0] - ref[0]) <= 1e-8 * abs(ref[0])


@pytest.mark.parametrize("ggn", [False, True])
def test_block_lanczos_rows_agree_with_dense_eigh(ggn: bool) -> None:
    """The bench's seeded block Lanczos rows (batched double backward; batched GGN where the
    route decision accepts the block) against dense eigh, and what they count."""
    s = tiny_setup()
    ref, _ = eigen.reference(s)
    with torch.enable_grad():
        refusal = ggn_refusal(s.model, [s.batch], s.spec, s.U, s.V)
    if ggn and refusal is not None:
        with pytest.raises(RuntimeError, match="GGN refused"):
            eigen.block_method(s, 1e-10, ggn=True)()
        return
    res = eigen.block_method(s, 1e-10, ggn=ggn)()
    n = min(len(res["eigenvalues"]), 5)
    assert abs(res["eigenvalues"][:n] - ref[:n]).max() <= 1e-8 * abs(ref[0])
    assert res["n_hvp"] >= s.U.shape[1]  # the seed block's products are counted


@pytest.mark.parametrize("peer", ["curvlinops", "pyhessian", "eigenthings"])
def test_peer_hk_agrees(peer: str) -> None:
    pytest.importorskip(
        {
            "curvlinops": "curvlinops",
            "pyhessian": "pyhessian",
            "eigenthings": "hessian_eigenthings",
        }[peer]
    )
    s = tiny_setup()
    ref = hk.curvprof_method(s)()
    fn = {
        "curvlinops": lambda: peers.curvlinops_hk(s, matrix=True),
        "pyhessian": lambda: peers.pyhessian_hk(s, freeze_others=True),
        "eigenthings": lambda: peers.eigenthings_hk(s),
    }[peer]()
    assert cases.rel_diff(fn(), ref) <= 1e-10


def test_store_case_runs_both_views_on_a_small_sqlite_store() -> None:
    import bench.store

    res = bench.store.run_case(300, 1, backends=("sqlite",))
    for view in ("brief", "full"):
        v = res["sqlite"][view]
        assert v["requests"] >= len(bench.store.QUERIES) and 0 < v["p50_ms"] <= v["p99_ms"]
        assert v["query_p50_ms"] > 0


def test_report_renders_every_case_from_json() -> None:
    from bench import report

    res = {
        "hk": [
            {
                "model": "mlp",
                "layer": "layers.1",
                "shape": [4, 4],
                "batch": 8,
                "K": 2,
                "floor_marginal_per_dir": 0.5,
                "floor_setup": 1.0,
                "rows": [
                    {"method": "curvprof", "per_dir": 0.6, "rel_err": 1e-16, "ratios": [1.0, 1.4]},
                    {"method": "peer", "error": "unsupported"},
                ],
            }
        ],
        "goals": [{"goal": "h_k at the floor (mlp)", "ratio": 1.2, "met": False, "note": ""}],
    }
    text = report.render([res])
    assert "| curvprof | 0.60 | 0.50–0.70 | 1.0e-16 |" in text
    assert "error: unsupported" in text and "**missed**" in text


def test_hk_variants_agree_with_the_engine_loop() -> None:
    from bench import hk_variants

    s = tiny_setup()
    ref = hk_variants.loop(s)()
    assert cases.rel_diff(hk.curvprof_method(s)(), ref) <= 1e-12
    assert cases.rel_diff(hk.curvprof_h_only_method(s)(), ref) <= 1e-12
    for name, fn in hk_variants.variants(s).items():
        assert cases.rel_diff(fn(), ref) <= 1e-10, name


def test_dashboard_bench_slice() -> None:
    """bench.dashboard on 2000 stored layers (no browser): every page of the mix answers."""
    from bench import dashboard

    result = dashboard.run(2000, 1, browser=False)
    assert set(result["server_ms"]) >= set(dashboard.pages(2000))
    assert "job, sorted, page 2" in result["server_ms"]  # the keyset 'next' link was followed
    assert all(0 < ms < 10_000 for ms in result["server_ms"].values())
    assert "browser, charts drawn" in dashboard.table(result)
