"""The notebook runs top to bottom on the CPU (small sizes), and is committed without outputs."""

from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "two_layer_net.ipynb"


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_runs_clean_on_cpu(monkeypatch, tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("TWOLAYER_XP_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "difference from the correct loss" in text and "max relative error" in text
    assert "test accuracy" in text and ("faster than this CPU" in text or "No GPU here" in text)
    images = [
        out for out in outputs if out.output_type == "display_data" and "image/png" in out.get("data", {})
    ]
    assert len(images) >= 5  # toy curve, history, weights, heat map, throughput
    assert not [out for out in outputs if out.output_type == "error"]
