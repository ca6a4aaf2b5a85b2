"""The benchmark plot: records built by hand, no framework needed."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from normcheck.bench.records import BACKWARD, ERROR, FORWARD, OOM, SKIP, BenchCase, BenchResult
from normcheck.errors import UsageError
from normcheck.report.bench_plot import input_bytes, line_label, plot, plot_format

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def result(
    op: str = "gn",
    shape: tuple[int, ...] = (2, 32, 8, 8),
    pass_: str = FORWARD,
    framework: str = "torch",
    impl: str = "F.group_norm",
    mode: str = "eager",
    dtype: str = "float32",
    device: str = "cpu",
    status: str = "ok",
    dram: float | None = None,
) -> BenchResult:
    case = BenchCase(
        op=op,
        shape=shape,
        params="G=32" if op == "gn" else "k=1",
        dtype=dtype,
        framework=framework,
        impl=impl,
        device=device,
        pass_=pass_,
        mode=mode,
    )
    if status != "ok":
        return BenchResult(case, status=status, reason=f"{status} for a test")
    n = 1
    for s in shape:
        n *= s
    t = 1e-6 + n * 1e-9
    return BenchResult(
        case, samples=(t, 1.1 * t, 0.95 * t, 1.05 * t, t), bytes_moved=12 * n, copy_gbps=20.0, dram_gbps=dram
    )


def sweep(**kw: object) -> list[BenchResult]:
    return [result(shape=(2, c, 8, 8), **kw) for c in (32, 64, 128)]


def svg_texts(path: Path) -> set[str]:
    root = ET.parse(path).getroot()
    return {"".join(e.itertext()).strip() for e in root.iter(f"{SVG}text")}


@pytest.fixture
def results() -> list[BenchResult]:
    rows = sweep() + sweep(pass_=BACKWARD) + sweep(framework="jax", impl="flax GroupNorm", mode="jax.jit")
    rows += [result(op="ln", shape=(16, h), impl="F.layer_norm") for h in (64, 256)]
    return rows


def test_png_is_written(tmp_path: Path, results: list[BenchResult]) -> None:
    out = tmp_path / "bench.png"
    plot(results, out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["bench.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_svg_has_a_line_per_label_and_the_copy_line(tmp_path: Path, results: list[BenchResult]) -> None:
    out = tmp_path / "bench.svg"
    plot(results, out)
    texts = svg_texts(out)
    for r in results:
        assert line_label(r) in texts
    assert "copy bandwidth" in texts
    assert "input size (bytes)" in texts
    assert not any("DRAM" in t for t in texts)  # CPU: no theoretical DRAM line
    titles = [t for t in texts if t.startswith("group norm")]
    assert any("forward" in t and "float32" in t and "cpu" in t for t in titles)
    assert any("backward" in t for t in titles)
    assert any(t.startswith("layer norm forward") for t in texts)


def test_cuda_rows_get_the_dram_line(tmp_path: Path) -> None:
    out = tmp_path / "cuda.svg"
    plot(sweep(device="cuda:0", dram=3350.0), out)
    texts = svg_texts(out)
    assert "theoretical DRAM bandwidth" in texts and "copy bandwidth" in texts


def test_uppercase_suffix_is_accepted(tmp_path: Path) -> None:
    out = tmp_path / "bench.PNG"
    plot(sweep(), out)
    assert out.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("name", ["bench.pdf", "bench", "bench.png.txt"])
def test_other_suffixes_raise_usage_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match=r"--plot takes a \.png or \.svg file, not"):
        plot(sweep(), tmp_path / name)
    with pytest.raises(UsageError):  # checked before anything else, even with nothing to plot
        plot([], tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rows", [[], [result(status=SKIP), result(status=ERROR), result(status=OOM)]])
def test_nothing_measured_raises_usage_error(tmp_path: Path, rows: list[BenchResult]) -> None:
    with pytest.raises(UsageError, match="nothing was measured to plot"):
        plot(rows, tmp_path / "bench.png")
    assert list(tmp_path.iterdir()) == []


def test_skip_and_error_rows_are_ignored(tmp_path: Path) -> None:
    rows = [
        *sweep(),
        result(framework="tensorflow", impl="tf skipped", status=SKIP),
        result(framework="onnxruntime", impl="ort failed", status=ERROR),
        result(op="bn", shape=(8, 4, 4, 4), impl="F.batch_norm", status=OOM),
    ]
    out = tmp_path / "bench.svg"
    plot(rows, out)
    texts = svg_texts(out)
    assert line_label(rows[0]) in texts
    assert not any("tf skipped" in t or "ort failed" in t for t in texts)
    assert not any(t.startswith("batch norm") for t in texts)  # no row for an op with nothing measured


def test_rows_without_bytes_still_plot(tmp_path: Path) -> None:
    rows = [BenchResult(r.case, samples=r.samples) for r in sweep()]
    out = tmp_path / "bench.svg"
    plot(rows, out)
    assert line_label(rows[0]) in svg_texts(out)


def test_unwritable_directory_raises_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot write"):
        plot(sweep(), tmp_path / "missing" / "bench.png")


def test_input_bytes_and_format() -> None:
    assert input_bytes(result(shape=(2, 32, 8, 8))) == 2 * 32 * 8 * 8 * 4
    assert input_bytes(result(shape=(16, 64), dtype="bfloat16")) == 16 * 64 * 2
    assert plot_format(Path("x.svg")) == "svg"


def test_svg_parses_when_a_label_holds_control_characters(tmp_path: Path) -> None:
    out = tmp_path / "bench.svg"
    plot(sweep(impl="my\x07impl\x1b[31m", device="cpu\x00"), out)
    texts = svg_texts(out)  # parses
    assert any("my\\x07impl\\x1b[31m" in t for t in texts)
    assert any("cpu\\x00" in t for t in texts)
