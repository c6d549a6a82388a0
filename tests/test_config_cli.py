"""One config declaration per job: YAML loading, typed key=value overrides, --help and the README key tables."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from latentflow.config_cli import (
    apply_overrides,
    attribute_docs,
    config_help,
    config_keys,
    config_markdown,
    load_job_config,
    type_name,
)
from latentflow.configuration import Config, _section_type, check_choice, check_positive
from latentflow.errors import ConfigError
from latentflow.evaluation.config import EvalJobConfig
from latentflow.jobs.config import EncodeJobConfig
from latentflow.training.config import TrainAutoencoderConfig, TrainPriorConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
JOB_CONFIGS = [EncodeJobConfig, EvalJobConfig, TrainAutoencoderConfig, TrainPriorConfig]


def _leaf_fields(cls: type[Config], prefix: str = ""):
    """(dotted key, declared type) of every field, walked with dataclasses alone (not config_cli's walk)."""
    types = cls.field_types()
    for f in dataclasses.fields(cls):
        yield f"{prefix}{f.name}", types[f.name]
        section, _ = _section_type(types[f.name])
        if section is not None:
            yield from _leaf_fields(section, f"{prefix}{f.name}.")


# ---- overrides typed against each job's own class -----------------------------------------------


def test_evaluation_overrides_are_typed_against_the_evaluation_config(tmp_path):
    """Regression: the evaluation job's overrides were typed against EncodeJobConfig, so an evaluation-only
    list field given one value (``models=models/kl-f8``) stayed a string and was refused."""
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"models": ["a"], "source": {"format": "folder", "urls": ["./images"]}}))
    cfg = EvalJobConfig.from_yaml(str(path), ["models=models/kl-f8", "lpips_weights=2024", "max_images=3"])
    assert cfg.models == ["models/kl-f8"]  # a string given to a list[str] field is a one-item list
    assert cfg.lpips_weights == "2024"  # a str field keeps what was typed, not the YAML int
    assert cfg.max_images == 3
    braces = EvalJobConfig.from_yaml(str(path), ["models={a..b}"])  # braces parse as a YAML mapping: kept raw
    assert braces.models == ["{a..b}"]


def test_training_overrides_are_typed_too(tmp_path):
    path = tmp_path / "prior.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": "out"}}))
    cfg = load_config(TrainPriorConfig, str(path), ["train.output_dir=2024", "optim.lr=1e-3", "data.bucket=32x48",
                                                    "prior.config={hidden_size: 64}"])
    assert cfg.train.output_dir == "2024" and cfg.optim.lr == 1e-3 and cfg.data.bucket == "32x48"
    assert cfg.prior.config == {"hidden_size": 64}  # a dict field keeps the YAML mapping
    with pytest.raises(ConfigError, match="RunSection.max_steps must be int"):
        load_config(TrainPriorConfig, str(path), ["train.max_steps='7'"])  # quoted: a string, refused


def test_overrides_reach_into_sections_and_return_a_new_dict():
    data = {"source": {"urls": ["x.tar"]}}
    out = apply_overrides(data, ["source.urls=/d/shard-{000000..000099}.tar", "processor.resolution=64"], EncodeJobConfig)
    assert out == {"source": {"urls": "/d/shard-{000000..000099}.tar"}, "processor": {"resolution": 64}}  # str | list
    assert data == {"source": {"urls": ["x.tar"]}}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["batch_size"], EncodeJobConfig)
    with pytest.raises(ConfigError, match="'model' is not a section"):
        apply_overrides({"model": "m"}, ["model.x=1"], EncodeJobConfig)


def test_load_job_config_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml' is not valid YAML .*line"):
        load_job_config(EncodeJobConfig, str(bad))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a YAML mapping at the top level, got: list"):
        load_job_config(EvalJobConfig, str(listing))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"model": "m", "source": {"urls": ["a.tar"]}}))
    with pytest.raises(ConfigError, match="unknown key 'bogus' for SourceConfig"):
        load_job_config(EncodeJobConfig, str(good), ["source.bogus=1"])
    cfg = load_job_config(EncodeJobConfig, str(good), ["batch_size=3"])
    assert cfg == EncodeJobConfig.from_yaml(str(good), ["batch_size=3"])  # the public API is a thin wrapper
    assert cfg.batch_size == 3 and cfg.source.urls == ["a.tar"]


# ---- --help and the README key tables, generated from the dataclasses -----------------------


def test_every_encode_key_is_in_help_with_its_type_and_default():
    text = config_help(EncodeJobConfig)
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ") and not line.startswith("   ")}
    keys = list(_leaf_fields(EncodeJobConfig))
    assert len(keys) > 60 and "video.fps" in dict(keys) and "source.urls" in dict(keys)
    for key, tp in keys:
        assert key in lines, key
        assert f" {type_name(tp)} = " in lines[key], (key, lines[key])
    # each leaf's default, as shown, reads back as YAML to the dataclass default
    assert yaml.safe_load(lines["batch_size"].split(" = ", 1)[1]) == 8
    assert yaml.safe_load(lines["formats"].split(" = ", 1)[1]) == ["parquet", "zarr"]
    assert yaml.safe_load(lines["source.format"].split(" = ", 1)[1]) == "webdataset"
    assert yaml.safe_load(lines["video.num_frames"].split(" = ", 1)[1]) == 17
    assert yaml.safe_load(lines["model_subfolder"].split(" = ", 1)[1]) is None
    assert lines["video"].endswith("= null (section off)")


@pytest.mark.parametrize("cls", JOB_CONFIGS, ids=lambda c: c.__name__)
def test_every_key_of_every_job_has_one_line_of_help(cls):
    rows = list(config_keys(cls))
    assert [r.key for r in rows] == [k for k, _ in _leaf_fields(cls)]
    assert not [r.key for r in rows if not r.help], "document these in the dataclass's Attributes: section"
    table = config_markdown(cls).splitlines()
    assert table[0] == "| key | type | default | meaning |" and len(table) == len(rows) + 2
    assert all(line.count(" | ") >= 3 for line in table[2:])


def test_nested_defaults_come_from_the_parent_default():
    rows = {r.key: r for r in config_keys(EvalJobConfig)}
    assert yaml.safe_load(rows["source.format"].default) == "folder"  # EvalJobConfig's source, not SourceConfig's
    assert yaml.safe_load(rows["processor.resolution"].default) == 64
    rows = {r.key: r for r in config_keys(TrainPriorConfig)}
    assert yaml.safe_load(rows["optim.lr"].default) == 3e-4


def test_attribute_docs_split_shared_entries_and_join_continuations():
    class Doc(Config):
        """A doc.

        Attributes:
            a, b: shared
                over two lines.
            c / d: slash-shared.
            e: single.

        Example: not an attribute.
        """

    assert attribute_docs(Doc) == {"a": "shared over two lines.", "b": "shared over two lines.",
                                   "c": "slash-shared.", "d": "slash-shared.", "e": "single."}


def test_encode_job_help_runs_in_a_subprocess():
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "encode_dataset.py"), "--help"], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "config keys of EncodeJobConfig" in out
    for key, tp in _leaf_fields(EncodeJobConfig):
        assert f"  {key} " in out and type_name(tp) in out, key
    assert "side of the square crop" in out  # help from the dataclass docstring (GeometryConfig.resolution)


# ---- the shared validators ------------------------------------------------------------------


def test_check_positive_one_or_many_values():
    check_positive("Cfg", "n", 1)
    check_positive("Cfg", "n", 0, allow_zero=True)
    check_positive("Cfg", a=1, b=None)  # None: unset, not checked
    with pytest.raises(ConfigError, match=r"^Cfg.n must be > 0, got: 0$"):
        check_positive("Cfg", "n", 0)
    with pytest.raises(ConfigError, match=r"^train.log_every must be > 0, got: -1$"):
        check_positive("train", max_steps=3, log_every=-1)
    with pytest.raises(ConfigError, match=r"^data.holdout_shards must be >= 0, got: -2$"):
        check_positive("data", holdout_shards=-2, allow_zero=True)
    with pytest.raises(ConfigError, match=r"must be one of \['l1', 'l2'\], got: 'l3'"):
        check_choice("loss", "reconstruction", "l3", ("l1", "l2"))


@pytest.mark.parametrize("job, config", [("train_prior", "configs/train/flow_prior.yaml"),
                                         ("train_autoencoder", "configs/train/vae_photos.yaml"),
                                         ("evaluate", "configs/eval/photos.yaml")])
def test_every_job_script_refuses_config_mistakes_in_one_line(job, config):
    """A missing config file and an unknown key: one ``error:`` line naming the fix, exit 2, no traceback (the
    evaluation job used to print a traceback and exit 1)."""
    root = Path(__file__).resolve().parents[1]
    for args, says in (([f"--config=missing-{job}.yaml"], "not found; give a YAML job file"),
                       ([f"--config={config}", "nosuchkey=1"], "unknown key 'nosuchkey'")):
        done = subprocess.run([sys.executable, f"jobs/{job}.py", *args], cwd=str(root), capture_output=True, text=True, timeout=120)
        [line] = done.stderr.strip().splitlines()
        assert done.returncode == 2 and line.startswith("error: ConfigError: ") and says in line, done.stderr
