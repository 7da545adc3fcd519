import argparse
import dataclasses
import json

import pandas as pd
import pytest

from aed_tf.config import Config, FrontEndConfig
from aed_tf.errors import InputError
from aed_tf.labels import CALM, CLASSES, apply_calm_policy, class_names


def test_field_names_are_unique_across_sections():
    names = Config.field_names()
    assert len(names) == len(set(names))


def test_flat_round_trip_keeps_every_field():
    config = Config().replace(n_mels=64, data_roots=["a", "b"], calm="separate", mixup_alpha=0.2)
    flat = config.to_flat()
    assert set(flat) == set(Config.field_names())
    assert Config.from_flat(**flat) == config
    assert config.frontend.n_mels == 64 and config.data.data_roots == ("a", "b")


def test_json_round_trip_nested_and_flat():
    config = Config().replace(seed=7, batch_size=8, augment=False)
    assert Config.from_dict(json.loads(config.to_json())) == config
    assert Config.from_dict(config.to_flat()) == config


def test_unknown_parameter_suggests_the_close_name():
    with pytest.raises(ValueError, match="n_mel.*did you mean 'n_mels'"):
        Config().replace(n_mel=64)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fmax": 9000.0}, "fmax"),
        ({"n_fft": 256}, "n_fft"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction \\+ test_fraction"),
        ({"calm": "sleepy"}, "calm"),
        ({"batch_size": 0}, "batch_size"),
        ({"snr_db_min": 50.0}, "snr_db_min"),
        ({"n_mels": 12.5}, "n_mels"),
        ({"augment": "maybe"}, "augment"),
        ({"speed_perturbation": 0.5}, "speed_perturbation"),
        ({"frequency_warp": -0.1}, "frequency_warp"),
        ({"protocol": "leave-one-out"}, "protocol"),
        ({"normalization": "corpus"}, "normalization"),
        # Non-finite floats pass `> 0`, then overflow or poison training far from the flag.
        ({"clip_seconds": float("inf")}, "clip_seconds = inf: must be a finite number"),
        ({"learning_rate": float("inf")}, "learning_rate = inf: must be a finite number"),
        ({"gain_db": float("nan")}, "gain_db = nan: must be a finite number"),
        ({"max_clip_seconds": float("inf")}, "max_clip_seconds"),
        # A folder name: "../elsewhere" would write outside output_dir.
        ({"run_id": "../elsewhere"}, "run_id = '../elsewhere': must be a folder name"),
        ({"run_id": "a/b"}, "run_id"),
        ({"run_id": ".."}, "run_id"),
    ],
)
def test_invalid_values_name_the_parameter(change, message):
    with pytest.raises(ValueError, match=message):
        Config().replace(**change)


def test_values_from_papermill_and_json_are_coerced():
    config = Config().replace(n_mels=64.0, clip_seconds=2, augment="false", data_roots="data")
    assert config.frontend.n_mels == 64 and isinstance(config.frontend.n_mels, int)
    assert config.frontend.clip_seconds == 2.0 and isinstance(config.frontend.clip_seconds, float)
    assert config.augment.augment is False
    assert config.data.data_roots == ("data",)


def test_every_field_is_a_cli_flag_with_help():
    parser = argparse.ArgumentParser()
    Config.add_arguments(parser)
    flags = {a.dest: a for a in parser._actions if a.dest in Config.field_names()}
    assert set(flags) == set(Config.field_names())
    assert all(a.help and "default" in a.help for a in flags.values())


def _subcommand_parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommand_parsers(sub, path + (name,))


def test_every_command_help_renders():
    from aed_tf.cli import build_parser

    parsers = dict(_subcommand_parsers(build_parser()))
    assert {("train",), ("bench", "cv"), ("predict",)} <= set(parsers)
    for path, parser in parsers.items():
        text = parser.format_help()  # argparse %-formats every help string here
        assert text.startswith("usage: "), path
    # A help text with a literal percentage comes out as written.
    assert "up to 60% " in " ".join(parsers[("train",)].format_help().split())


def test_cli_flags_override_only_what_was_given():
    parser = argparse.ArgumentParser()
    Config.add_arguments(parser, positional="data_roots", aliases={"prepared_dir": "--out"})
    args = parser.parse_args(["r1", "r2", "--out", "x", "--n-mels", "80", "--no-augment", "--calm", "drop"])
    config = Config.from_args(args)
    assert config.data.data_roots == ("r1", "r2")
    assert config.data.prepared_dir == "x"
    assert (config.frontend.n_mels, config.augment.augment, config.data.calm) == (80, False, "drop")
    untouched = {
        k: v
        for k, v in config.to_flat().items()
        if k not in ("data_roots", "prepared_dir", "n_mels", "augment", "calm")
    }
    assert untouched == {k: v for k, v in Config().to_flat().items() if k in untouched}


def test_frontend_derived_sizes():
    frontend = FrontEndConfig(sample_rate=16000, clip_seconds=3.0, window_ms=25.0, hop_ms=10.0)
    assert (frontend.window_length, frontend.hop_length, frontend.clip_samples) == (400, 160, 48000)
    assert frontend.num_frames == 1 + (48000 - 400) // 160


def test_configs_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().frontend.n_mels = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "calm, expected_classes, expected_emotions",
    [
        ("neutral", CLASSES, ["neutral", "neutral", "sad"]),
        ("separate", CLASSES + (CALM,), ["neutral", "calm", "sad"]),
        ("drop", CLASSES, ["neutral", "sad"]),
    ],
)
def test_calm_policy(calm, expected_classes, expected_emotions):
    manifest = pd.DataFrame({"clip_id": ["a", "b", "c"], "emotion": ["neutral", "calm", "sad"]})
    assert class_names(calm) == expected_classes
    out = apply_calm_policy(manifest, calm)
    assert list(out["emotion"]) == expected_emotions
    assert list(manifest["emotion"]) == ["neutral", "calm", "sad"]  # the input is not modified


def test_unknown_calm_policy_is_refused():
    with pytest.raises(ValueError, match="calm policy"):
        class_names("merge")


def test_make_demo_and_bench_cv_train_the_recommended_cpu_setting():
    import re
    from pathlib import Path

    from aed_tf.cli import build_parser
    from aed_tf.config import CPU_SETTING

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    demo = dict(re.findall(r"-p (\w+) (\S+)", re.search(r"DEMO_PARAMETERS :=(.*?)\n\S", makefile, re.S)[1]))
    assert Config().replace(**demo).replace(protocol="cv", fold="1") == Config().replace(**demo)
    demo_setting = {name: Config().replace(**demo).to_flat()[name] for name in CPU_SETTING}
    # The demo trains the recommended setting, on fewer epochs if it must to stay near 10 minutes.
    assert 0 < demo_setting.pop("epochs") <= CPU_SETTING["epochs"]
    assert demo_setting == {name: value for name, value in CPU_SETTING.items() if name != "epochs"}
    args = build_parser().parse_args(["bench", "cv"])
    assert Config.from_args(args).replace(**CPU_SETTING) == Config.from_args(args)
    assert Config.from_args(args).train.backbone == CPU_SETTING["backbone"] != Config().train.backbone


def test_the_fusion_needs_per_speaker_normalisation_as_flags_or_parameters_given_together():
    from aed_tf.runner import parse_parameters

    with pytest.raises(
        InputError,
        match=r"fusion = 'egemaps': must be none \(--fusion none\) unless normalization is speaker",
    ):
        Config().replace(fusion="egemaps")
    assert Config().replace(fusion="egemaps", normalization="speaker").train.fusion == "egemaps"
    assert parse_parameters([("fusion", "egemaps"), ("normalization", "speaker"), ("epochs", "3")]) == {
        "fusion": "egemaps",
        "normalization": "speaker",
        "epochs": 3,
    }
    with pytest.raises(InputError, match="fusion"):
        parse_parameters([("fusion", "egemaps")])
