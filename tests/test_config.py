"""Configs: presets load, overrides are type-checked, bad keys and values are one-line errors."""

from __future__ import annotations

import pytest
import yaml

from slm_tui.config import Config
from slm_tui.errors import ConfigError
from slm_tui.presets import list_presets, load_config


def test_presets_load_and_validate():
    names = list_presets()
    assert {"tiny", "small", "seed-gpt"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, Config)


def test_seed_gpt_is_the_notebook_shape():
    m = load_config("seed-gpt").model
    assert (m.n_layer, m.n_head, m.d_model, m.context_length) == (6, 6, 384, 128)
    assert (m.positions, m.norm, m.mlp, m.bias) == ("learned", "layernorm", "gelu", True)


def test_overrides_are_typed():
    cfg = load_config(
        "tiny",
        [
            "train.lr=3e-4",
            "train.max_steps=10",
            "model.n_kv_head=2",
            "train.compile=true",
            "train.device=cpu",
            "data.data_files=[a.txt, b.txt]",
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.max_steps == 10 and isinstance(cfg.train.max_steps, int)
    assert cfg.model.n_kv_head == 2
    assert cfg.train.compile is True
    assert cfg.data.data_files == ["a.txt", "b.txt"]


def test_string_field_keeps_numeric_looking_text():
    assert load_config("tiny", ["train.device=0"]).train.device == "0"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.lrr=1", "unknown config key train.lrr"),
        ("train.lr=fast", "train.lr must be a number"),
        ("model.n_layer=2.5", "model.n_layer must be an integer"),
        ("train.compile=maybe", "train.compile must be true, false or auto"),
        ("nosuch.key=1", "unknown config section"),
        ("train.lr", "must look like section.key=value"),
        ("model.mlp=relu", "model.mlp must be one of"),
        ("model.n_head=3", "divisible"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override])
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_config("tiny", ["train.lrr=1"])
    assert "max_steps" in str(info.value) and "weight_decay" in str(info.value)


def test_yaml_file_by_path_and_unknown_key_in_file(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump({"model": {"n_layer": 1}, "train": {"lr": 0.01}}))
    cfg = load_config(str(good))
    assert cfg.model.n_layer == 1 and cfg.train.lr == 0.01

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"layers": 1}}))
    with pytest.raises(ConfigError, match=r"unknown config key model\.layers"):
        load_config(str(bad))


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config preset 'huge'.*tiny"):
        load_config("huge")
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="directory"):
        load_config(str(tmp_path) + "/")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(evil))


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config("seed-gpt", ["train.max_steps=7"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(str(path))
    assert again == cfg
