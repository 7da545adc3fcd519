import json
from pathlib import Path

import pytest

from aed_tf import cli
from aed_tf.bench import ENVIRONMENT_KEYS


@pytest.mark.shared_data
def test_bench_train_reports_held_out_speakers_per_corpus(shared_datasets, shared_cache, tmp_path, capsys):
    output = tmp_path / "train.json"
    argv = [
        "bench",
        "train",
        "--backbones",
        "mobilenetv3small",
        "--output",
        str(output),
        "--data-roots",
        str(shared_datasets / "RAVDESS"),
        str(shared_datasets / "TESS"),
        "--cache-dir",
        str(shared_cache),
        "--prepared-dir",
        str(tmp_path / "prepared"),
        "--output-dir",
        str(tmp_path / "runs"),
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--n-mels",
        "32",
        "--batch-size",
        "64",
    ]
    assert cli.main(argv) == 0
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
    assert set(ENVIRONMENT_KEYS) <= set(result)  # the block every benchmark result records
    table = output.with_suffix(".md").read_text()
    assert "shared-si" in table and "| test UAR ravdess | test UAR tess | mean of the corpora |" in table
    # The clip counts in the table are the result's, not figures written into the code.
    assert "1,399 of the 1,639 test clips are tess's" in table
    ravdess, tess = run["test_per_corpus"]["ravdess"]["uar"], run["test_per_corpus"]["tess"]["uar"]
    assert (
        f"| mobilenetv3small (32 px, 1 epochs) | {ravdess:.3f} | {tess:.3f} | {(ravdess + tess) / 2:.3f} "
        f"| {run['test']['uar']:.3f} |" in table
    )
    assert "baselines_uar" not in result and "MLP" not in table  # no hard-coded baseline figures
    assert f"Measured with {result['cpu_count']} CPUs" in table
    assert "- mobilenetv3small: `aed-tf bench train --backbones mobilenetv3small" in table
    assert "best test UAR" in capsys.readouterr().out

    # The same settings again: the finished run is reused, not trained again, and a row that an
    # earlier command made for another backbone is kept with its own command.
    trained_at = (Path(run["run_dir"]) / "serving.keras").stat().st_mtime_ns
    result["results"].append({**run, "backbone": "efficientnetb0", "command": "aed-tf bench train (earlier)"})
    output.write_text(json.dumps(result))
    assert cli.main(argv) == 0
    again = json.loads(output.read_text())
    assert (Path(run["run_dir"]) / "serving.keras").stat().st_mtime_ns == trained_at
    assert [r["backbone"] for r in again["results"]] == ["mobilenetv3small", "efficientnetb0"]
    assert again["results"][0]["test"] == pytest.approx(run["test"])
    assert again["results"][1]["command"] == "aed-tf bench train (earlier)"
    assert again["ensemble"]["backbones"] == ["mobilenetv3small", "efficientnetb0"]


def test_the_ensemble_averages_the_models_probabilities_on_the_same_clips():
    import pandas as pd

    from aed_tf.bench.train import ensemble_metrics, recall_per_class
    from aed_tf.evaluate import Evaluation

    classes = ("angry", "sad")

    def evaluation(p_angry):
        frame = pd.DataFrame(
            {
                "clip_id": ["a", "b", "c", "d"],
                "corpus": ["ravdess", "ravdess", "tess", "tess"],
                "label": [0, 1, 0, 1],
                "p_angry": p_angry,
            }
        )
        frame["p_sad"] = 1 - frame["p_angry"]
        frame["predicted"] = (frame["p_sad"] > frame["p_angry"]).astype(int)
        return Evaluation("test", "shared-si", True, classes, frame, {}, pd.DataFrame(), pd.DataFrame())

    # Each model gets one clip wrong, narrowly (c, then d): their mean is right on every clip.
    first, second = evaluation([0.9, 0.45, 0.4, 0.1]), evaluation([0.55, 0.1, 0.9, 0.6])
    assert recall_per_class(first.predictions, classes) == {"angry": 0.5, "sad": 1.0}
    result = ensemble_metrics([first, second])
    assert result["test"]["accuracy"] == 1.0 and result["test"]["uar"] == 1.0
    assert set(result["test_per_corpus"]) == {"ravdess", "tess"}
    assert result["test_recall_per_class"] == {"angry": 1.0, "sad": 1.0}
    shuffled = evaluation([0.9, 0.45, 0.4, 0.1])
    shuffled.predictions["clip_id"] = ["b", "a", "c", "d"]
    with pytest.raises(ValueError, match="same clips"):
        ensemble_metrics([first, shuffled])
