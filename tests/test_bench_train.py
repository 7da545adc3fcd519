import json

import pytest

from aed_tf import cli


@pytest.mark.shared_data
def test_bench_train_reports_held_out_speakers_per_corpus(shared_datasets, shared_cache, tmp_path, capsys):
    output = tmp_path / "train.json"
    code = cli.main([
        "bench", "train", "--backbones", "mobilenetv3small", "--output", str(output),
        "--data-roots", str(shared_datasets / "RAVDESS"), str(shared_datasets / "TESS"),
        "--cache-dir", str(shared_cache), "--prepared-dir", str(tmp_path / "prepared"),
        "--output-dir", str(tmp_path / "runs"), "--epochs", "1", "--image-size", "32",
        "--n-mels", "32", "--batch-size", "64",
    ])
    assert code == 0
    result = json.loads(output.read_text())
    assert result["protocol"] == "shared-si" and "RAVDESS actors 17-20" in result["protocol_description"]
    assert result["weights"].startswith("none")
    (run,) = result["results"]
    assert run["backbone"] == "mobilenetv3small" and run["epochs"] == 1 and run["image_size"] == 32
    assert set(run["test_per_corpus"]) == {"ravdess", "tess"}
    # Test speakers: RAVDESS actors 17-20 (4 x 60 clips) and TESS YAF (1,399 clips here).
    assert run["test_per_corpus"]["ravdess"]["clips"] == 240
    assert run["test_per_corpus"]["tess"]["clips"] == 1399
    assert 0 <= run["test"]["uar"] <= 1 and run["train_images_per_second"] > 0
    cost = result["pipeline_cost"]
    assert cost["pipeline_images_per_second"] > 0 and cost["in_memory_images_per_second"] > 0
    table = output.with_suffix(".md").read_text()
    assert "shared-si" in table and "librosa statistics + MLP" in table and "Command: `aed-tf bench train" in table
    assert "best test UAR" in capsys.readouterr().out
