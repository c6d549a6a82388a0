"""Evaluation job on real photos with tiny models: JSON report with finite values and every PNG plot."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from PIL import Image

from latentflow.errors import ConfigError
from latentflow.evaluation import EvalJobConfig, run_evaluation
from latentflow.models.autoencoder import AutoencoderConfig, AutoencoderModel
from latentflow.models.transvae import TransVAEConfig, TransVAEModel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_TRANSVAE = {"block_out_channels": [8, 16], "transformer_dim": 32, "transformer_depths": [1, 1], "num_heads": 2,
                 "latent_channels": 4, "norm_num_groups": 4}


@pytest.fixture(scope="module")
def photo_folder(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for name, img in sorted(photos.items())[:5]:
        Image.fromarray(img[:96, :96]).save(root / f"{name}.png")
    (root / "broken.png").write_bytes(b"\x89PNG not an image")
    return root


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    TransVAEModel(TransVAEConfig.from_dict(TINY_TRANSVAE)).save_pretrained(root / "transvae")
    AutoencoderModel(AutoencoderConfig(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4)).save_pretrained(root / "ae")
    return [str(root / "transvae"), str(root / "ae")]


def _config(photo_folder, models, out, **extra) -> EvalJobConfig:
    return EvalJobConfig.from_dict({
        "models": models, "output": str(out), "source": {"format": "folder", "urls": [str(photo_folder)]},
        "processor": {"resolution": 32}, "batch_size": 4, "grid_images": 3, **extra})


def _assert_png(path: str) -> None:
    assert os.path.getsize(path) > 1000
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert Image.open(path).size[0] > 50


def _assert_finite(value) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _assert_finite(v)
    elif isinstance(value, list):
        for v in value:
            _assert_finite(v)
    elif isinstance(value, float):
        assert math.isfinite(value)


@pytest.mark.slow
def test_evaluate_two_models_writes_report_and_plots(ray_local, photo_folder, tiny_models, tmp_path):
    report = run_evaluation(_config(photo_folder, tiny_models, tmp_path / "out"))
    with open(tmp_path / "out" / "report.json") as f:
        on_disk = json.load(f)
    assert on_disk["num_images"] == 5 and set(on_disk["models"]) == set(tiny_models)
    for name, m in on_disk["models"].items():
        for key in ("psnr", "ssim", "latent_stats", "throughput", "size_reduction_factor", "weights_sha256", "lpips_note"):
            assert m[key] is not None, key
        assert m["lpips"] is None and "skipped" in m["lpips_note"]
        assert [s["key"] for s in m["skipped"]] == ["broken"]
        assert len(m["per_image"]) == 5 and m["codebook"] is None
        assert m["throughput"]["encode_images_per_s"] > 0 and m["throughput"]["decode_images_per_s"] > 0
        _assert_finite(m)
    tv, ae = (on_disk["models"][n] for n in tiny_models)
    assert tv["size_reduction_factor"] == 3 * 32 * 32 / (4 * 4 * 4) and tv["latent_shape"] == [4, 4, 4]
    assert ae["size_reduction_factor"] == 3 * 32 * 32 / (4 * 16 * 16)
    assert len(tv["latent_stats"]["channel_std"]) == 4
    assert tv["latent_stats"]["suggested_scaling_factor"] == pytest.approx(1 / tv["latent_stats"]["global_std"])
    plots = report["plots"]
    for path in [plots["reconstruction_grid"], plots["comparison"], *plots["latent_histograms"].values()]:
        _assert_png(path)
    assert len(plots["latent_histograms"]) == 2


@pytest.mark.slow
def test_evaluate_quantized_model_reports_codebook(ray_local, photo_folder, tmp_path):
    pytest.importorskip("latentflow.models.vq_autoencoder")
    from latentflow.auto import AutoConfig, AutoModel

    cfg = AutoConfig.for_model("vq_autoencoder", block_out_channels=[8, 16], norm_num_groups=4)
    AutoModel.from_config(cfg).save_pretrained(tmp_path / "vq")
    report = run_evaluation(_config(photo_folder, [str(tmp_path / "vq")], tmp_path / "out", max_images=4))
    m = report["models"][str(tmp_path / "vq")]
    cb = m["codebook"]
    assert cb["total"] > 0 and 0 < cb["usage"] <= 1 and 1 <= cb["perplexity"] <= cb["codebook_size"]
    assert cb["dead_codes"] == cb["codebook_size"] - cb["used"]
    _assert_png(report["plots"]["codebook_usage"][str(tmp_path / "vq")])


def test_eval_config_errors():
    with pytest.raises(ConfigError, match="models must name"):
        EvalJobConfig.from_dict({"models": []})
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        EvalJobConfig.from_dict({"models": ["x"], "modle": 1})
    with pytest.raises(ConfigError, match="buckets must be false"):
        EvalJobConfig.from_dict({"models": ["x"], "processor": {"buckets": True}})


def test_shipped_eval_config_parses():
    cfg = EvalJobConfig.from_yaml("configs/eval/photos.yaml", ["max_images=4", "models=[a, b]"])
    assert cfg.max_images == 4 and cfg.models == ["a", "b"] and cfg.source.format == "webdataset"
