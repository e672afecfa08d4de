"""benchmarks/gpu_check.py and benchmarks/real_size_smoke.py run their code paths on the CPU at small sizes (the
same code that runs on a GPU at full size), record failures per section and compare backends strictly."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from mirage_env.models import from_preset

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def scripts():
    """The two scripts as modules (they import their siblings, e.g. ``measure``, by plain name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("gpu_check"), importlib.import_module("real_size_smoke")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def quick_report(scripts, tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("gpu_check")
    return scripts[0].main(["--quick", "--out", str(out)]), out


def test_quick_check_runs_every_section_and_writes_json_and_markdown(quick_report):
    report, out = quick_report
    assert report["complete"] and report["quick"]
    assert json.loads((out / "gpu_check.json").read_text())["complete"]
    markdown = (out / "gpu_check.md").read_text()
    for name, section in report["sections"].items():
        assert section["ok"], (name, section.get("traceback"))
        assert f"## {name}" in markdown
    assert report["environment"]["torch"] == torch.__version__
    assert report["environment"]["extension"]["cpu"]["openmp"] in (True, False)


def test_quick_kernels_compare_the_cpu_extension_with_the_reference_and_skip_cuda_with_a_reason(quick_report):
    kernels = quick_report[0]["sections"]["kernels"]
    assert kernels["all_integer_outputs_bitwise_equal"]
    ops = {r["op"] for r in kernels["rows"]}
    assert ops == {"project_zbuffer", "depth_consistency", "segment_fuse", "memory_read"}
    for row in kernels["rows"]:
        assert set(row["timings"]) == {"reference", "cpu extension"}
        assert row["equality"]["against"] == "cpu extension" and row["equality"]["reference"]["bitwise_equal"]
        assert row["cuda extension"].startswith("skipped: no CUDA device")
        assert all(t["ms"] > 0 and 0 < t["fraction_of_copy"] for t in row["timings"].values())


def test_quick_real_size_runs_every_memory_through_the_segment_loop(quick_report):
    real = quick_report[0]["sections"]["real_size"]
    assert [len(real["runs"][k]["chunks"]) for k in ("latent", "rgb", "append")] == [3, 1, 1]
    for run in real["runs"].values():
        assert all(c["frames"] == 32 and c["seconds"] > 0 and c["memory_bytes"] > 0 for c in run["chunks"])
    assert real["end_to_end_rgb_over_latent"] > 0 and real["paper_end_to_end"] == 10.57
    first = {kind: run["chunks"][0] for kind, run in real["runs"].items()}
    assert first["rgb"]["stage_ms"]["read"] > first["latent"]["stage_ms"]["read"]  # the RGB read encodes a video


def test_quick_vector_env_and_training_report_rates(quick_report):
    sections = quick_report[0]["sections"]
    env = sections["vector_env"]
    assert set(env["frames_per_s"]) == {1, 2} and env["n8_over_n1"] is None and env["saturates_at"] in (1, 2)
    stages = sections["training"]["stages"]
    assert set(stages) == {"vae", "dit", "addon", "lora"}
    assert all(s["steps_per_s"] > 0 for s in stages.values())


def test_a_failing_section_is_recorded_and_shown(scripts):
    gpu_check = scripts[0]

    def broken(plan, device):
        raise RuntimeError("no kernel image is available")

    result = gpu_check.run_section("kernels", broken, gpu_check.QUICK, torch.device("cpu"))
    assert not result["ok"] and "no kernel image" in result["error"] and "Traceback" in result["traceback"]
    report = {"quick": True, "complete": False, "environment": gpu_check.environment(torch.device("cpu")),
              "sections": {"kernels": result}}
    assert "FAILED: RuntimeError: no kernel image is available" in gpu_check.markdown(report)


def test_compare_finds_one_differing_key_and_sums_out_of_tolerance(scripts):
    compare = scripts[0].compare
    keys = torch.arange(10)
    assert not compare("project_zbuffer", {"cpu extension": keys, "reference": keys + (keys == 3)})["reference"][
        "bitwise_equal"]
    fused = (keys, torch.ones(10, 3), torch.ones(10, 2), torch.ones(10), keys)
    off = (keys, torch.ones(10, 3), torch.ones(10, 2) + 1e-3, torch.ones(10), keys)
    row = compare("segment_fuse", {"cpu extension": fused, "reference": off})["reference"]
    assert row["bitwise_equal"] and not row["within_tolerance"] and row["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_the_full_check_exits_with_a_message(scripts, tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA device.*--quick"):
        scripts[0].main(["--out", str(tmp_path)])
    assert not (tmp_path / "gpu_check.json").exists()


def test_real_size_smoke_on_the_tiny_preset_writes_its_figures(scripts, tmp_path, one_thread):
    out = tmp_path / "smoke.json"
    report = scripts[1].main(["--preset", "tiny", "--height", "16", "--width", "32", "--steps", "1", "--out",
                              str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    assert report["image_hw"] == [16, 32] and report["latent_hw"] == [2, 4] and report["steps"] == 1
    chunk = report["chunks"][0]
    assert chunk["frames"] == 32 and chunk["seconds"] > 0 and report["peak_rss_bytes"] > report["model_bytes"]


@pytest.mark.parametrize("argv, message", [(["--height", "24"], "multiples of 16"),
                                           (["--frames", "32"], "frames must be 1 \\+ 4k")])
def test_real_size_smoke_rejects_sizes_the_model_cannot_take_before_writing(scripts, tmp_path, argv, message):
    out = tmp_path / "smoke.json"
    with pytest.raises(SystemExit, match=message):
        scripts[1].main(["--preset", "tiny", "--steps", "1", "--out", str(out), *argv])
    assert not out.exists()


def test_the_real_preset_with_random_weights_is_created_in_bfloat16():
    model = from_preset("wan2.2-ti2v-5b", random_weights=True, device="meta", dtype=torch.bfloat16,
                        vae_dtype=torch.bfloat16)
    keep = {p.dtype for n, p in model.dit.named_parameters() if "scale_shift_table" in n or ".norm2." in n}
    rest = {p.dtype for n, p in model.dit.named_parameters() if "attn1.to_q" in n}
    assert keep == {torch.float32} and rest == {torch.bfloat16}
    assert 8.2e9 < sum(p.numel() for p in model.parameters()) < 8.4e9  # DiT 5.0B + branch 2.6B + VAE 0.7B
    with pytest.raises(ValueError, match="random_weights"):
        from_preset("wan2.2-ti2v-5b", weights_dir="somewhere", random_weights=True)
