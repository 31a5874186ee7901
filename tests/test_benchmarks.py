"""Smoke tests of the benchmark suites: each runs on its ``--tiny`` setting into ``tmp_path`` (never
into docs/) and must write its markdown section and raw JSON with the expected columns."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("snntorch")
pytest.importorskip("norse")

from benchmarks import run as bench  # noqa: E402
from benchmarks.common import SECTIONS, SUITES, write_section  # noqa: E402
from benchmarks.suite_ablation import COLUMNS as ABLATION_COLUMNS  # noqa: E402
from benchmarks.suite_scale import COLUMNS as SCALE_COLUMNS  # noqa: E402
from benchmarks.suite_sim import COLUMNS as SIM_COLUMNS  # noqa: E402
from benchmarks.suite_train import COLUMNS as TRAIN_COLUMNS  # noqa: E402

EXPECTED = {
    "train": (TRAIN_COLUMNS, 6, {"test accuracy", "spikes/sample", "spikes/neuron", "time steps",
                                 "peak RSS (MiB)"}),
    "sim": (SIM_COLUMNS, 8, {"surrogate forward (ms)", "simulated batch (ms)",
                             "simulated samples/s"}),
    "ablation": (ABLATION_COLUMNS, 5, {"test accuracy (mean ± std)",
                                       "spikes/sample (mean ± std)"}),
    "scale": (SCALE_COLUMNS, 2, {"ReLU step (ms)", "TTFS step (ms)", "ratio TTFS/ReLU"}),
}


@pytest.mark.parametrize("suite", SUITES)
def test_suite_tiny_writes_section_and_json(suite, tmp_path):
    md = tmp_path / "benchmarks.md"
    assert bench.main(["--suite", suite, "--tiny", "--out-md", str(md)]) == 0

    data = json.loads((tmp_path / "benchmarks" / f"{suite}.json").read_text())
    columns, n_rows, must_have = EXPECTED[suite]
    assert data["columns"] == columns and must_have <= set(columns)
    assert len(data["rows"]) == n_rows
    assert all(len(row) == len(columns) for row in data["rows"])
    assert data["machine"]["cores"] and data["machine"]["torch"]
    assert data["command"] == f"python -m benchmarks.run --suite {suite} --tiny"
    assert all(g["status"] in ("met", "MISSED", "n/a") for g in data["goals"])

    text = md.read_text()
    start, end = text.index(f"<!-- suite:{suite} -->"), text.index(f"<!-- /suite:{suite} -->")
    section = text[start:end]
    assert "| " + " | ".join(columns) + " |" in section
    assert data["command"] in section and "torch" in section
    # the other suites' placeholders are there, untouched
    for other in SUITES:
        assert f"<!-- suite:{other} -->" in text and f"<!-- /suite:{other} -->" in text


def test_writer_keeps_other_sections(tmp_path):
    md = tmp_path / "b.md"
    machine = {"cores": 2, "cpu_model": "cpu", "torch_threads": 2, "device": "cpu",
               "python": "3", "torch": "2", "loadavg_at_start": [0.0, 0.0, 0.0],
               "date_utc": "today"}
    result = {"title": "T", "command": "cmd", "columns": ["a", "b"], "rows": [["1", "2"]],
              "notes": ["n"], "goals": []}
    write_section(md, "sim", result, machine, 1.0, "sim.json")
    write_section(md, "train", {**result, "rows": [["3", "4"]]}, machine, 1.0, "train.json")
    write_section(md, "train", {**result, "rows": [["5", "6"]]}, machine, 1.0, "train.json")
    text = md.read_text()
    assert "| 1 | 2 |" in text and "| 5 | 6 |" in text and "| 3 | 4 |" not in text
    assert text.count("<!-- suite:train -->") == 1


def test_tiny_without_paths_never_writes_docs(monkeypatch, tmp_path):
    """--tiny with no --out-md goes to a temporary folder, not docs/benchmarks.md."""
    seen = {}

    def fake_run(opts):
        seen["opts"] = opts
        return {"title": "t", "columns": ["a"], "rows": [["1"]], "notes": [], "goals": []}

    import benchmarks.suite_sim as sim
    monkeypatch.setattr(sim, "run", fake_run)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    bench.main(["--suite", "sim", "--tiny"])
    assert str(tmp_path) in seen["opts"].out_md
    assert "docs" not in seen["opts"].out_md


def test_gpu_dry_run_reports_every_part(tmp_path):
    """The GPU suite's CPU dry run: every part ok, or skipped where it needs CUDA."""
    import torch

    from benchmarks import suite_gpu

    md = tmp_path / "benchmarks.md"
    assert bench.main(["--suite", "gpu", "--dry-run", "--out-md", str(md)]) == 0
    data = json.loads((tmp_path / "benchmarks" / "gpu.json").read_text())
    parts = data["parts"]
    assert list(parts) == [key for key, *_ in suite_gpu.PARTS]
    failed = {k: p.get("error") for k, p in parts.items()
              if p["status"] not in (suite_gpu.OK, suite_gpu.SKIPPED)}
    assert not failed
    for key, *_, cuda_only in suite_gpu.PARTS:
        assert parts[key]["status"] == (suite_gpu.SKIPPED if cuda_only else suite_gpu.OK), key
    assert data["command"] == "python -m benchmarks.run --suite gpu --dry-run"
    assert data["columns"] == suite_gpu.COLUMNS and len(data["rows"]) == len(suite_gpu.PARTS)
    assert data["raw"]["dry_run"] and data["goals"][0]["status"] == "met"
    assert [t["columns"] for t in data["tables"]] == [suite_gpu.STEP_COLUMNS,
                                                      suite_gpu.SIM_COLUMNS]
    assert data["raw"]["parts"]["versions"]["data"]["versions"]["torch"] == torch.__version__
    text = md.read_text()
    section = text[text.index("<!-- suite:gpu -->"):text.index("<!-- /suite:gpu -->")]
    assert "| " + " | ".join(suite_gpu.COLUMNS) + " |" in section and "Dry run" in section
    for name in SECTIONS:
        assert f"<!-- suite:{name} -->" in text


def test_gpu_failing_part_is_reported_and_the_rest_run(monkeypatch):
    from benchmarks import suite_gpu

    def broken(ctx, data):
        data["partial"] = 1
        raise RuntimeError("boom")

    monkeypatch.setattr(suite_gpu, "PARTS", [
        ("a", "A", broken, "s", "s", False),
        ("b", "B", lambda ctx, data: "fine", "s", "s", False),
        ("c", "C", lambda ctx, data: "never", "s", "s", True)])
    parts = suite_gpu.run_parts(suite_gpu.Context(dry_run=True))
    assert parts["a"]["status"] == "FAILED" and "RuntimeError: boom" in parts["a"]["error"]
    assert parts["a"]["data"] == {"partial": 1} and "Traceback" in parts["a"]["traceback"]
    assert parts["b"]["status"] == "ok" and parts["b"]["summary"] == "fine"
    assert parts["c"]["status"] == "skipped (no CUDA)"
    late = suite_gpu.run_parts(suite_gpu.Context(dry_run=True), budget_s=-1)
    assert late["b"]["status"] == suite_gpu.OVER_BUDGET


def test_gpu_suite_without_cuda_needs_dry_run(monkeypatch):
    import argparse

    from benchmarks import suite_gpu

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit, match="--dry-run"):
        suite_gpu.run(argparse.Namespace(dry_run=False, tiny=False))


def test_ablation_deep_tiny(tmp_path):
    """ablation-deep (not part of ``all``): its own section, six rows per quantizer, gradients
    per layer read at every update of the deep net."""
    from benchmarks import suite_ablation_deep as deep

    md = tmp_path / "benchmarks.md"
    assert bench.main(["--suite", "ablation-deep", "--tiny", "--out-md", str(md)]) == 0
    data = json.loads((tmp_path / "benchmarks" / "ablation-deep.json").read_text())
    assert data["command"] == "python -m benchmarks.run --suite ablation-deep --tiny"
    assert data["columns"] == deep.COLUMNS
    quantizers = data["raw"]["quantizers"]
    assert quantizers == ["ceil", "round"]
    assert len(data["rows"]) == 6 * len(quantizers)
    assert all(len(row) == len(deep.COLUMNS) for row in data["rows"])
    assert [r[1] for r in data["rows"][:6]][:2] == ["SM x_max0=1 (no SR)", "SM x_max0=2 (no SR)"]
    layers = data["raw"]["layers"]
    assert len(layers) == 16 and layers[0] == "conv1" and layers[-1] == "output"  # 13+2+1
    for config in data["raw"]["configurations"]:
        grads = config["runs"][0]["gradients"]
        assert grads["updates"] == [2] and set(grads["first_update"]) == set(layers)
        assert all(v >= 0 for v in grads["first_update"].values())
    assert [t["columns"][2:] for t in data["tables"]] == [layers, ["epoch 1"]]
    assert len(data["goals"]) == 7 * len(quantizers)
    assert all(g["status"] in ("met", "MISSED", "n/a") for g in data["goals"])
    text = md.read_text()
    section = text[text.index("<!-- suite:ablation-deep -->"):
                   text.index("<!-- /suite:ablation-deep -->")]
    assert "| " + " | ".join(deep.COLUMNS) + " |" in section
    for name in SECTIONS:
        assert f"<!-- suite:{name} -->" in text
    assert "ablation-deep" not in SUITES  # ~25 minutes: not run by --suite all


def test_gradient_probe_takes_out_l2(tmp_path):
    """The probe reads dCE/dW: the L2 term's gradient 2·λ_w·W is subtracted."""
    import torch

    from benchmarks.suite_ablation_deep import GradientProbe
    from ttfs_plugin.training import total_loss

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    probe = GradientProbe(net, opt, 1e-2, steps_per_epoch=1)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss, _ = total_loss(net(x), y, net, lambda_w=1e-2)
    loss.backward()
    ce_grad = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y),
                                  net[0].weight)[0]
    opt.step()
    opt.step()  # a second update (epoch 2) with the same gradient
    summary = probe.summary()
    assert summary["updates"] == [1, 1] and summary["zero_updates"] == [0, 0]
    assert abs(summary["first_update"]["0"] - ce_grad.abs().mean().item()) < 1e-7
