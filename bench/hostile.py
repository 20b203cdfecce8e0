"""The hostile-input corpus and its campaign against a real ``curvprof serve`` and the CLI.

    python -m bench.hostile [--out DIR] [--json FILE]

``build_corpus(directory)`` writes every case (pickles, bad safetensors headers, zip bombs in
each archive format, huge configs, long names, NUL bytes) and describes how to send it over
REST and through the command line. The campaign starts ``curvprof serve`` on 127.0.0.1 (a
subprocess, so its peak RSS can be read from /proc), sends every case, runs every case with a
command-line form as its own ``curvprof`` process, and checks: a 4xx for each request, a
one-line ``curvprof: error:`` and a non-zero exit for each command, the server's peak RSS
growth, nothing left under ``artifacts/``, and that no pickle ran inside the server. Figures
in docs/reliability.md ("Hostile input"); tests/service/test_hostile.py runs a bounded slice.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.hostile_files import npy_header, safetensors_bytes, stored, write_zip, zero_bomb

MLP = {"arch": "mlp", "in_features": 64, "widths": [16], "classes": 10}
BOMB_BYTES = 3 << 30  # above the 2 GiB default; deflated to ~3 MB


@dataclass
class HostileCase:
    """One input. ``endpoint``: "datasets" | "checkpoints" | "jobs"; ``cli``: arguments after
    ``curvprof`` ({model}, {url} filled in), or None when the case has no command-line form."""

    name: str
    endpoint: str
    file: str | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    cli: list[str] | None = None


@dataclass
class CaseResult:
    name: str
    channel: str  # "rest" | "cli"
    status: int  # HTTP status, or the exit code
    message: str
    ok: bool


class _MarkerPayload:
    """Unpickling this appends the unpickling process's pid to ``path``; it then yields None,
    or with ``value`` sample inputs for a digits-shaped model (so the archive still loads)."""

    def __init__(self, path: Path, value: bool = False) -> None:
        self.path, self.value = str(path), value

    def __reduce__(self) -> tuple[Any, ...]:
        write = f"open({self.path!r}, 'a').write(str(__import__('os').getpid()) + '\\n')"
        if self.value:
            return (eval, (f"({write}, ((__import__('torch').zeros(2, 1, 8, 8),), {{}}))[1]",))
        return (exec, (write,))


def marker_path(directory: Path) -> Path:
    return directory / "pickle-ran.txt"


def build_corpus(directory: Path, bomb_bytes: int = BOMB_BYTES) -> list[HostileCase]:
    """Write the corpus under ``directory`` and describe each case."""
    import numpy as np
    import torch

    from workers.intake.checkpoints import save_checkpoint
    from workers.zoo import build_model

    d = directory
    d.mkdir(parents=True, exist_ok=True)
    model = build_model(MLP)
    save_checkpoint(model, d / "model")
    (d / "model.json").write_text(json.dumps(MLP))
    w = dict(model.state_dict())
    cases: list[HostileCase] = []

    def data_case(name: str, content: bytes, suffix: str = ".npz") -> None:
        (d / f"{name}{suffix}").write_bytes(content)
        cli = ["profile", "{model}", "--data", f"{name}{suffix}", "--quiet"]
        cases.append(HostileCase(name, "datasets", f"{name}{suffix}", cli=cli))

    def ckpt_case(name: str, content: bytes, config: Any = None, suffix: str = ".safetensors"):  # type: ignore[no-untyped-def]
        (d / f"{name}{suffix}").write_bytes(content)
        fields = {} if config is None else {"config": json.dumps(config)}
        cli = None
        if config is not None and suffix != ".pt2":
            (d / f"{name}.json").write_text(fields["config"])
            cli = ["profile", f"{name}.json", "--weights", f"{name}{suffix}", "--data", "digits"]
        elif suffix == ".pt2":
            cli = ["profile", f"{name}{suffix}", "--data", "digits", "--quiet"]
        cases.append(HostileCase(name, "checkpoints", f"{name}{suffix}", fields=fields, cli=cli))

    # --- zip bombs, one per archive format (real deflate streams, valid CRCs)
    npy = npy_header((bomb_bytes // 8,))
    data_case("npz_bomb", _zip(d, [zero_bomb("inputs.npy", npy, bomb_bytes)]))
    targets = stored("targets.npy", npy_header((4,), "<i8") + bytes(32))
    lying = stored("inputs.npy", npy_header((10**6, 10**6)) + bytes(64))
    data_case("npz_shape_lies", _zip(d, [lying, targets]))
    many = [stored(f"a{i}.npy", npy_header((1,), "|u1") + b"\0") for i in range(10_001)]
    data_case("npz_too_many_members", _zip(d, many))
    buf = io.BytesIO()
    np.savez(buf, inputs=np.array([object()] * 4, dtype=object), targets=np.zeros(4))
    data_case("npz_object_pickle", buf.getvalue())
    data_case("npz_not_zip", b"PK\x03\x04" + os.urandom(200))
    pt_bomb = _zip(d, [zero_bomb("archive/data/0", b"", bomb_bytes)])
    ckpt_case("pt_bomb", pt_bomb, MLP, suffix=".pt")
    buf = io.BytesIO()
    torch.save({**w, "x": _MarkerPayload(marker_path(d))}, buf)
    ckpt_case("pt_pickle", buf.getvalue(), MLP, suffix=".pt")
    ckpt_case("pt2_bomb", _zip(d, [zero_bomb("m/data/weights/w0", b"", bomb_bytes)]), suffix=".pt2")
    ckpt_case("pt2_pickle", evil_pt2(marker_path(d)), suffix=".pt2")
    ckpt_case(
        "pt2_two_roots",
        _zip(d, [stored("a/archive_format", b"pt2"), stored("b/x", b"")]),
        suffix=".pt2",
    )
    # --- safetensors headers
    t = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    data16 = bytes(16)
    bad_headers: dict[str, bytes] = {
        "st_deep_nesting": safetensors_bytes(None, data16, b"[" * 100_000 + b"]" * 100_000),
        "st_offsets_strings": safetensors_bytes(
            {"inputs": {**t, "data_offsets": ["0", "16"]}}, data16
        ),
        "st_offsets_nested": safetensors_bytes(
            {"inputs": {**t, "data_offsets": [[0], [16]]}}, data16
        ),
        "st_bad_dtype": safetensors_bytes({"inputs": {**t, "dtype": "Q99"}}, data16),
        "st_negative_shape": safetensors_bytes({"inputs": {**t, "shape": [-4]}}, data16),
        "st_shape_huge": safetensors_bytes(
            {"inputs": {**t, "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}, data16
        ),
        "st_header_len_huge": (1 << 62).to_bytes(8, "little") + b"{}",
        "st_header_not_utf8": safetensors_bytes(None, data16, b"\xff\xfe" * 8),
        "st_overlap": safetensors_bytes(
            {"inputs": t, "targets": {**t, "data_offsets": [8, 24]}}, bytes(24)
        ),
        "st_nul_name": safetensors_bytes({"in\u0000puts": t}, data16),
    }
    for name, content in bad_headers.items():
        data_case(name, content, ".safetensors")
    weights = _weights_bytes(w)
    for name, meta in {
        "st_meta_config_object": {"config": {"arch": "mlp"}},
        "st_meta_config_number": {"config": 7},
        "st_meta_config_not_object": {"config": "[1, 2]"},
        "st_meta_no_config": {"format": "pt"},
    }.items():
        ckpt_case(name, _with_metadata(weights, meta))
    # --- huge or hostile configs: a 68-byte weights file, the config does the damage
    one = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    tiny = safetensors_bytes(one, bytes(4))
    for name, config in {
        "cfg_mlp_20000x20000": {"arch": "mlp", "widths": [20000, 20000]},
        "cfg_mlp_width_1e9": {"arch": "mlp", "widths": [10**9]},
        "cfg_vgg_image_100000": {"arch": "vgg", "image_size": 100000},
        "cfg_gpt_depth_1e6": {"arch": "gpt", "depth": 10**6},
        "cfg_vit_wide": {"arch": "vit", "dim": 1 << 20},
        "cfg_nul_key": {"arch": "mlp", "wid\u0000ths": [4]},
    }.items():
        ckpt_case(name, tiny, config)
        zoo = {k: v for k, v in config.items() if k != "arch"}
        body = {"checkpoint_id": f"zoo:{config['arch']}", "dataset": "digits", "zoo_config": zoo}
        cases.append(HostileCase(f"job_{name}", "jobs", body=body))
    cases.append(
        HostileCase(
            "cfg_int_5000_digits",
            "checkpoints",
            "model/model.safetensors",
            fields={"config": '{"arch": "mlp", "widths": [' + "9" * 5000 + "]}"},
        )
    )
    # --- names and form abuse
    ext = "." + "x" * 300
    cases.append(HostileCase("name_long_extension", "datasets", "npz_not_zip.npz", "d" + ext))
    cases.append(HostileCase("name_long", "datasets", "npz_not_zip.npz", "n" * 300 + ".npz"))
    cases.append(HostileCase("name_nul", "datasets", "npz_not_zip.npz", "a\u0000b.npz"))
    cases.append(HostileCase("name_no_extension", "checkpoints", "npz_not_zip.npz", "weights"))
    fields = {f"f{i}": "v" * 65536 for i in range(200)}
    cases.append(
        HostileCase("form_200_fields", "checkpoints", "model/model.safetensors", fields=fields)
    )
    cases.append(
        HostileCase(
            "form_field_2mib",
            "checkpoints",
            "model/model.safetensors",
            fields={"config": " " * (2 << 20)},
        )
    )
    return cases


def _zip(d: Path, members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    with tempfile.NamedTemporaryFile(dir=d, suffix=".zip", delete=False) as fh:
        path = Path(fh.name)
    try:
        return write_zip(path, members).read_bytes()
    finally:
        path.unlink()


def _weights_bytes(state: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def _with_metadata(weights: bytes, metadata: dict[str, Any]) -> bytes:
    """The same tensors with another ``__metadata__`` (any JSON value, as an attacker sends)."""
    n = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + n])
    header["__metadata__"] = metadata
    return safetensors_bytes(header, weights[8 + n :])


def evil_pt2(marker: Path, loads: bool = False) -> bytes:
    """A real ``torch.export`` archive (digits 1x8x8 -> 8 -> 10 MLP) whose sample inputs unpickle
    ``_MarkerPayload``; with ``loads`` the archive still loads after the payload ran."""
    import torch

    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10)
    )
    batch = {0: torch.export.Dim("batch")}
    program = torch.export.export(net.eval(), (torch.randn(2, 1, 8, 8),), dynamic_shapes=(batch,))
    clean, evil = io.BytesIO(), io.BytesIO()
    torch.export.save(program, clean)
    payload = io.BytesIO()
    torch.save(_MarkerPayload(marker, loads), payload)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(evil, "w") as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("sample_inputs/model.pt"):
                data = payload.getvalue()
            out.writestr(info, data)
    return evil.getvalue()


def multipart(fields: dict[str, str], filename: str | None, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body built by hand, so any file name (NUL, 300 bytes) goes as is."""
    boundary = "hostile" + os.urandom(8).hex()
    parts = bytearray()
    for name, value in fields.items():
        parts += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        parts += value.encode() + b"\r\n"
    disposition = f'form-data; name="file"; filename="{filename}"'.encode("utf-8", "replace")
    parts += f"--{boundary}\r\n".encode() + b"Content-Disposition: " + disposition + b"\r\n"
    parts += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    parts += f"--{boundary}--\r\n".encode()
    return bytes(parts), f"multipart/form-data; boundary={boundary}"


def send_rest(client: Any, corpus: Path, case: HostileCase) -> CaseResult:
    """POST one case with an ``httpx.Client``; ok means a 4xx with a JSON error body."""
    if case.endpoint == "jobs":
        response = client.post("/v1/jobs", json=case.body)
    else:
        assert case.file is not None
        data = (corpus / case.file).read_bytes()
        filename = case.filename or Path(case.file).name
        body, content_type = multipart(case.fields, filename, data)
        response = client.post(
            f"/v1/{case.endpoint}", content=body, headers={"content-type": content_type}
        )
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    ok = 400 <= response.status_code < 500 and "\n" not in message
    return CaseResult(case.name, "rest", response.status_code, message, ok)


def run_cli(
    args: list[str], corpus: Path, url: str, name: str | None = None, timeout_s: float = 300.0
) -> CaseResult:
    """One ``curvprof`` process; ok means a non-zero exit and one line on stderr."""
    argv = [a.format(model=str(corpus / "model"), url=url) for a in args]
    if argv[0] == "submit":
        argv += ["--url", url]
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *argv],
        cwd=corpus,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        check=False,
    )
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    ok = done.returncode != 0 and len(lines) == 1 and lines[0].startswith("curvprof: error: ")
    message = lines[-1] if lines else ""
    return CaseResult(name or " ".join(args[:2]), "cli", done.returncode, message, ok)


class ServerProcess:
    """``curvprof serve`` on 127.0.0.1 in a subprocess; RSS figures from /proc."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str]) -> None:
        self.data_dir, self.url = data_dir, f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        self.log = open(data_dir.parent / f"serve-{port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"curvprof serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("curvprof serve did not become ready")

    def memory_kib(self, key: str) -> int:
        """``VmRSS`` (now) or ``VmHWM`` (peak) of the server process, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class CampaignResult:
    results: list[CaseResult]
    baseline_peak_mib: float
    final_peak_mib: float
    leftovers: list[str]
    marker_pids: list[int]
    server_pid: int
    seconds: float

    @property
    def rss_growth_mib(self) -> float:
        return self.final_peak_mib - self.baseline_peak_mib

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]


SERVER_ENV = {
    "CURVPROF_ALLOW_PICKLE_CHECKPOINTS": "true",  # the opt-in on: .pt2 must still stay out
    "CURVPROF_RUN_JOBS": "false",
    "CURVPROF_PICKLE_PROBE_TIMEOUT_S": "120",
}


def campaign(work: Path, cli_cases: int | None = None) -> CampaignResult:
    """Build the corpus under ``work``, start a server, run every case (``run_cases``)."""
    corpus = work / "corpus"
    cases = build_corpus(corpus)
    server = ServerProcess(work / "data", free_port(), SERVER_ENV)
    try:
        server.wait_ready()
        return run_cases(server, corpus, cases, cli_cases)
    finally:
        server.stop()


def run_cases(
    server: ServerProcess, corpus: Path, cases: list[HostileCase], cli_cases: int | None = None
) -> CampaignResult:
    """Every case over REST, then through the CLI: each case with a command-line form as its
    own ``curvprof profile`` process and two ``curvprof submit`` runs (``cli_cases`` bounds
    the profile runs, spread over the corpus, and keeps one submit)."""
    import httpx

    start = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=300) as client:
        warm = send_rest(client, corpus, next(c for c in cases if c.name == "npz_not_zip"))
        assert warm.status == 422, warm
        baseline = server.memory_kib("VmHWM") / 1024
        results = [send_rest(client, corpus, c) for c in cases]
        final = server.memory_kib("VmHWM") / 1024
    with_cli = [c for c in cases if c.cli is not None]
    if cli_cases is not None:
        with_cli = with_cli[:: max(1, len(with_cli) // max(1, cli_cases))][:cli_cases]
    for case in with_cli:
        assert case.cli is not None
        results.append(run_cli(case.cli, corpus, server.url, case.name))
    submits = {
        "submit_npz_bomb": ["submit", "zoo:mlp", "--data", str(corpus / "npz_bomb.npz")],
        "submit_st_meta_config_object": [
            "submit",
            str(corpus / "st_meta_config_object.safetensors"),
        ],
    }
    for name in list(submits)[: None if cli_cases is None else 1]:
        results.append(run_cli(submits[name], corpus, server.url, name))
    artifacts = server.data_dir / "artifacts"
    leftovers = [str(p.relative_to(artifacts)) for p in artifacts.rglob("*") if p.is_file()]
    marker = marker_path(corpus)
    pids = [int(x) for x in marker.read_text().split()] if marker.exists() else []
    elapsed = time.monotonic() - start
    return CampaignResult(results, baseline, final, leftovers, pids, server.proc.pid, elapsed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="work directory (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="curvprof-hostile-") as tmp:
        result = campaign(args.out or Path(tmp))
    for r in result.results:
        print(f"{'ok ' if r.ok else 'BAD'} {r.channel:4} {r.status:4} {r.name:28} {r.message[:90]}")
    print(
        f"{len(result.results)} runs, {len(result.failures)} failures; server peak RSS "
        f"{result.baseline_peak_mib:.0f} -> {result.final_peak_mib:.0f} MiB "
        f"(+{result.rss_growth_mib:.0f}); leftovers {len(result.leftovers)}; pickle ran in "
        f"pids {result.marker_pids} (server {result.server_pid}); {result.seconds:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=1))
    ok = not result.failures and not result.leftovers and result.rss_growth_mib <= 256
    return 0 if ok and result.server_pid not in result.marker_pids else 1


if __name__ == "__main__":
    sys.exit(main())
