"""The typed settings: fields that declare their types and bounds, overlays, generated command-line flags."""

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Annotated

import pytest

from gvsl.errors import GVSLInputError
from gvsl.pipeline import PARAMS, compose, load_settings
from gvsl.pipeline.config import PretrainSettings
from gvsl.pretrain import PretrainConfig
from gvsl.pretrain.command import add_arguments as pretrain_arguments
from gvsl.pretrain.config import PretrainSchedule
from gvsl.settings import Bounds, Checked, OneOf, add_flags, field_docs, from_flags, from_mapping, leaves, merge
from gvsl.transfer import TransferConfig
from tests.test_pipeline import ROOT


@dataclass(kw_only=True)
class Inner(Checked):
    """A group.

    Args:
        size: voxels, at least 2.
    """

    size: Annotated[int, Bounds(2, integer=True)] = 4


@dataclass(kw_only=True)
class Outer(Checked):
    """Settings of a test.

    Args:
        rate: a rate in (0, 1]; two lines
            of text.
        mode: ``a`` or ``b``.
        crop: three sizes.
        widths: any number of widths.
        inner: the inner group.
        caps: per-task caps, or one.
        flag: on or off.
    """

    rate: Annotated[float, Bounds(0.0, 1.0, open_low=True)] = 0.5
    mode: Annotated[str, OneOf(("a", "b"))] = "a"
    crop: Annotated[tuple[int, int, int], Bounds(1, integer=True)] = (8, 8, 8)
    widths: tuple[int, ...] = (8, 16)
    inner: Inner = field(default_factory=Inner)
    caps: Annotated[int | dict[str, int], Bounds(1, integer=True)] = 10
    flag: bool = False


def test_a_group_converts_yaml_values_to_its_types():
    built = from_mapping(Outer, {"crop": [4, 5, 6], "widths": [1, 2, 3], "inner": {"size": 3}, "rate": 1}, "x")
    assert built.crop == (4, 5, 6) and built.widths == (1, 2, 3) and built.inner == Inner(size=3)
    assert isinstance(built.rate, float) and built.rate == 1.0
    assert from_mapping(Outer, {"caps": {"SHC": 3}}, "x").caps == {"SHC": 3}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rate": 0.0}, "x: rate must be in (0, 1], got 0.0"),
        ({"rate": math.nan}, "x: rate must be in (0, 1], got nan"),
        ({"rate": "fast"}, "x: rate must be a number, got 'fast'"),
        ({"rate": True}, "x: rate must be a number, got True"),
        ({"mode": "c"}, "x: mode: unknown 'c'; valid: ['a', 'b']"),
        ({"crop": [4, 4]}, "x: crop must be a list of 3 integers, got [4, 4]"),
        ({"crop": [4, 0, 4]}, "x: crop must be an integer >= 1, got 0"),
        ({"crop": [4, 2.5, 4]}, "x: crop must be a list of 3 integers, got [4, 2.5, 4]"),
        ({"widths": "wide"}, "x: widths must be a list of integers, got 'wide'"),
        ({"caps": {1: 3}}, "x: caps must be an integer or a mapping, got {1: 3}"),
        ({"inner": {"size": 1}}, "x: inner.size must be an integer >= 2, got 1"),
        ({"inner": {"sise": 3}}, "x: inner: unknown settings ['sise']; valid: ['size']"),
        ({"inner": 3}, "x: inner must be a mapping of settings, got 3"),
        ({"caps": {"SHC": 0}}, "x: caps.SHC must be an integer >= 1, got 0"),
        ({"flag": "yes"}, "x: flag must be true or false, got 'yes'"),
        (
            {"speed": 1},
            "x: unknown settings ['speed']; valid: ['caps', 'crop', 'flag', 'inner', 'mode', 'rate', 'widths']",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_its_dotted_key(values, message):
    with pytest.raises(GVSLInputError) as raised:
        from_mapping(Outer, values, "x")
    assert str(raised.value) == message


def test_bounds_words():
    assert Bounds(0, integer=True).check("n", 3) is None
    with pytest.raises(GVSLInputError, match=r"^n must be an integer >= 1 or 'auto', got 'all'$"):
        Bounds(1, integer=True, also=("auto",)).check("n", "all")
    with pytest.raises(GVSLInputError, match=r"^p must be a probability \(why\), got 2$"):
        Bounds(0, 1, words="a probability", why="why").check("p", 2)


def test_merge_lays_an_overlay_over_a_base_and_a_new_source_replaces_its_mapping():
    base = {"a": {"b": 1, "c": 2}, "t": {"source": "x", "root": "r"}, "l": [1, 2]}
    merged = merge(base, {"a": {"c": 3}, "t": {"source": "y"}, "l": [3]}, replace_when_changed=("source",))
    assert merged == {"a": {"b": 1, "c": 3}, "t": {"source": "y"}, "l": [3]}
    assert merge(base, {"t": {"source": "x", "shape": 4}}, ("source",))["t"] == {"source": "x", "root": "r", "shape": 4}
    assert base["a"] == {"b": 1, "c": 2}  # not changed in place
    assert leaves({"a": {"b": 1}, "e": {}}) == {"a.b": 1, "e": {}}


def test_flags_are_generated_from_the_fields_with_their_docs_types_and_defaults():
    parser = argparse.ArgumentParser()
    add_flags(parser, Outer, skip=("inner", "caps"))
    help_text = parser.format_help()
    assert "a rate in (0, 1]; two lines of text (default: 0.5)" in " ".join(help_text.split())
    assert "--mode {a,b}" in help_text and "--crop D H W" in help_text and "--no-flag" in help_text
    args = parser.parse_args(["--rate", "0.25", "--crop", "1", "2", "3", "--widths", "4,5", "6", "--flag"])
    assert from_flags(Outer, args) == Outer(rate=0.25, crop=(1, 2, 3), widths=(4, 5, 6), flag=True)
    assert from_flags(Outer, parser.parse_args([])) == Outer()  # absent flags keep the class's defaults
    # a bad name is the settings' one-line error, as any other bad value
    with pytest.raises(GVSLInputError, match=r"^mode: unknown 'c'; valid: \['a', 'b'\]$"):
        from_flags(Outer, parser.parse_args(["--mode", "c"]))
    with pytest.raises(GVSLInputError, match=r"^widths must be a list of integers, got \['x', 'y'\]$"):
        from_flags(Outer, parser.parse_args(["--widths", "x,y"]))


def test_fields_without_a_flag_type_are_given_as_yaml_and_fields_without_a_default_are_required():
    parser = argparse.ArgumentParser()
    add_flags(parser, Outer, skip=("crop", "widths"), prefix="run")
    args = parser.parse_args(["--run-caps", "{SHC: 3}", "--run-inner", "{size: 5}"])
    assert from_flags(Outer, args, prefix="run") == Outer(caps={"SHC": 3}, inner=Inner(size=5))

    @dataclass(kw_only=True)
    class Needs(Checked):
        name: str

    required = argparse.ArgumentParser()
    add_flags(required, Needs)
    with pytest.raises(SystemExit):
        required.parse_args([])
    assert field_docs(Outer)["mode"] == "``a`` or ``b``."


def test_every_pretraining_setting_reaches_the_params_group_the_runs_and_the_command_line():
    """Adding a field to PretrainSchedule is the one edit that makes a pre-training setting: params.yaml's
    pretrain group takes it, every run's config carries it, and `gvsl pretrain` has its flag."""
    changed = {
        "iterations": 7,
        "batch_size": 3,
        "crop": (16, 24, 32),
        "crop_jitter": 2,
        "lr": 0.25,
        "lr_schedule": "cosine",
        "warmup": 3,
        "checkpoint_every": 5,
        "log_every": 2,
        "eval_every": 4,
        "precision": "bf16",
    }
    schedule_fields = {f.name for f in dataclasses.fields(PretrainSchedule)}
    assert set(changed) == schedule_fields, "give every field of PretrainSchedule a value here"
    assert schedule_fields <= {f.name for f in dataclasses.fields(PretrainSettings)}
    settings = compose({"model": {"channels": [8] * 9}, "pretrain": changed})
    for config in settings.pretrain_configs("gvsl"):
        assert {name: getattr(config, name) for name in changed} == changed
    parser = argparse.ArgumentParser()
    pretrain_arguments(parser)
    argv = ["--data", "d", "--out", "o", "--channels", "8,8,8,8,8,8,8,8,8"]
    for name, value in changed.items():
        argv += [f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else [value])]
    config = from_flags(PretrainConfig, parser.parse_args(argv))
    assert {name: getattr(config, name) for name in changed} == changed


def test_every_transfer_setting_has_a_flag_of_gvsl_transfer():
    from gvsl.transfer.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {action.dest for action in parser._actions}
    assert {f.name for f in dataclasses.fields(TransferConfig)} - {"task", "num_classes"} <= flags


def test_the_project_settings_resolve_and_read_back_to_themselves():
    settings = load_settings(ROOT / PARAMS)
    assert compose(settings.to_mapping()) == settings
    assert settings.pretrain.crop == (32, 32, 32) and settings.pretrain.batch_size == 2  # overlay, default


def test_a_settings_file_that_is_not_a_mapping_is_refused(tmp_path):
    (tmp_path / "p.yaml").write_text("- 1\n")
    with pytest.raises(GVSLInputError, match="p.yaml: must hold a mapping of settings"):
        load_settings(tmp_path / "p.yaml")
    with pytest.raises(GVSLInputError, match="no such settings file"):
        load_settings(tmp_path / "missing.yaml")
