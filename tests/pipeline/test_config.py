"""EncodeJobConfig: YAML + overrides, strict keys at every depth, clear errors; the default config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentflow.errors import CheckpointError, ConfigError
from latentflow.pipeline.config import EncodeJobConfig, apply_overrides
from latentflow.pipeline.runner import load_model

ROOT = Path(__file__).resolve().parents[2]


def test_default_config_loads_with_overrides():
    cfg = EncodeJobConfig.from_yaml(str(ROOT / "configs/encode/default.yaml"), ["batch_size=2", "processor.resolution=64", "source.urls=[a.tar, b.tar]"])
    assert cfg.batch_size == 2 and cfg.processor.resolution == 64 and cfg.source.urls == ["a.tar", "b.tar"]
    assert cfg.model == "kl-f8" and cfg.output == "./outputs/default" and cfg.formats == ("parquet", "zarr")
    again = EncodeJobConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_every_shipped_encode_config_loads():
    for path in sorted((ROOT / "configs/encode").glob("*.yaml")):
        assert EncodeJobConfig.from_yaml(str(path)).model


@pytest.mark.parametrize(
    "override, message",
    [
        ("batchsize=3", "unknown key 'batchsize'"),
        ("processor.resolutoin=3", "unknown key 'resolutoin'"),
        ("store.latent=median", "latent must be one of"),
        ("batch_size=0", "batch_size must be > 0, got: 0"),
        ("batch_size='8'", "batch_size must be int"),
        ("dtype=fp8", "dtype must be one of"),
        ("max_error_rate=2", "max_error_rate must be in [0, 1], got: 2"),
        ("formats=[csv]", "formats[] must be one of"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        EncodeJobConfig.from_yaml(str(ROOT / "configs/encode/default.yaml"), [override])
    assert message in str(err.value)


def test_overrides_reach_into_sections_without_mutating_input():
    data = {"source": {"urls": ["x"]}}
    out = apply_overrides(data, ["source.format=parquet", "output=s3://b/o"])
    assert out == {"source": {"urls": ["x"], "format": "parquet"}, "output": "s3://b/o"}
    assert data == {"source": {"urls": ["x"]}}


def test_public_dict_has_no_storage_options():
    cfg = EncodeJobConfig.from_dict({"model": "m", "storage_options": {"secret": "s3cr3t"},
                                     "source": {"urls": ["x.tar"], "storage_options": {"key": "k"}}})
    text = str(cfg.to_public_dict())
    assert "s3cr3t" not in text and "'key': 'k'" not in text
    assert cfg.resolved_storage_options() == {"secret": "s3cr3t"}


def test_missing_models_name_fails_clearly():
    with pytest.raises(CheckpointError, match="model 'no-such-model' not found: expected a checkpoint folder"):
        load_model("no-such-model")


def test_job_script_exits_2_with_a_clear_message_for_a_missing_model(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "jobs/encode_dataset.py"), "--config", str(ROOT / "configs/encode/default.yaml"),
         "model=no-such-model", f"output={tmp_path / 'out'}"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "CheckpointError: model 'no-such-model' not found" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before touching the output
