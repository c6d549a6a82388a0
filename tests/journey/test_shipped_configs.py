"""Shipped configs fit shipped data (issue #19 item 2): every ``configs/encode/*.yaml`` is encoded with the
README's command on the shipped data, and every stage-2 ``configs/train/*.yaml`` trains on the output of
its encode config, as the README chains them, with the shipped batch sizes (the small outputs leave each
worker fewer rows than one batch: partial batches) and the shipped patch sizes.

Overrides only shrink the run: a 64 px crop, 2 steps, 2 samples, a one-layer network (the shapes, batch
plans and decoders are the shipped ones). ``s3_buckets_bf16.yaml`` reads the shipped photos and writes
locally instead of S3; it is the one bucketed config, so it checks the default bucket step against
the flow prior's 2x2 patches. The encodes join one ``ray start --head``, as the README's jobs would.

The chains the README's own commands run (its encode command, then its train command on the default output)
are checked on that run, at the shipped sizes, by ``tests/journey/test_readme_commands.py``; here run the rest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.journey.test_readme_commands import check_samples, readme_commands

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = '["data/photos/photos-{000000..000001}.tar"]'

# encode config -> (its overrides, the train configs that read its output)
CHAINS = {
    "default.yaml": (["processor.resolution=64"], ["flow_prior.yaml"]),
    "tokens.yaml": (["processor.resolution=64"], ["gpt_prior.yaml", "discrete_diffusion_prior.yaml"]),
    "video_default.yaml": ([], ["flow_prior_video.yaml"]),
    "s3_buckets_bf16.yaml": ([f"source.urls={PHOTOS}", "processor.resolution=64"], ["flow_prior.yaml"]),
    "audio_default.yaml": ([], ["flow_prior_audio.yaml"]),
    "captioned.yaml": (["processor.resolution=64"], ["flow_prior_text.yaml"]),
    "video_audio.yaml": ([], []),  # joint clips: no shipped prior reads both columns (the README encodes and reads it)
}
SMALL_NETWORK = {"gpt_prior.yaml": ["prior.config.hidden_size=32", "prior.config.num_layers=1", "prior.config.num_heads=2"],
                 "discrete_diffusion_prior.yaml": ["prior.config.hidden_size=32", "prior.config.num_layers=1",
                                                   "prior.config.num_heads=2"],
                 "flow_prior.yaml": ["prior.config.hidden_size=32", "prior.config.num_layers=1", "prior.config.num_heads=2"],
                 "flow_prior_video.yaml": ["prior.config.hidden_size=32", "prior.config.num_layers=1", "prior.config.num_heads=2"],
                 "flow_prior_audio.yaml": ["prior.config.hidden_size=32", "prior.config.num_layers=1", "prior.config.num_heads=2",
                                           "sample.steps=2"],
                 "flow_prior_text.yaml": ["prior.config.hidden_size=32", "prior.config.num_layers=1", "prior.config.num_heads=2",
                                          "sample.steps=2"]}

pytestmark = pytest.mark.slow


def readme_chains() -> set[tuple[str, str]]:
    """(encode config, train config) pairs the README's commands run: an encode command writing the config's own
    output, and a train command reading it."""
    run = set()
    for line in "\n".join(readme_commands((ROOT / "README.md").read_text())).splitlines():
        found = re.search(r"jobs/(?:encode_dataset|train_prior)\.py --config \S*/(\S+\.yaml)(.*)", line.split("  #")[0])
        if found and "output=" not in found.group(2):
            run.add(found.group(1))
    return {(e, t) for e, (_, ts) in CHAINS.items() for t in ts if e in run and t in run}


def chains_left() -> list[tuple[str, str]]:
    covered = readme_chains()
    return [(e, t) for e, (_, ts) in CHAINS.items() for t in ts if (e, t) not in covered]


def stage2_train_configs() -> set[str]:
    return {p.name for p in (ROOT / "configs" / "train").glob("*.yaml") if "prior" in yaml.safe_load(p.read_text())}


def test_every_encode_config_and_every_prior_config_is_chained():
    assert set(CHAINS) == {p.name for p in (ROOT / "configs" / "encode").glob("*.yaml")}
    assert {t for _, trains in CHAINS.values() for t in trains} == stage2_train_configs() == set(SMALL_NETWORK)
    for encode, (_, trains) in CHAINS.items():  # the shipped default paths chain too (the README's commands)
        out = yaml.safe_load((ROOT / "configs" / "encode" / encode).read_text())["output"]
        if not out.startswith("s3://"):
            for train in trains:
                assert yaml.safe_load((ROOT / "configs" / "train" / train).read_text())["data"]["path"] == out


def _run(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    address, _, env = ray_cluster  # the session's shared `ray start --head`
    return {**env, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def encoded(cluster, tmp_path_factory):
    """Each encode config's output, encoded once per module, on first use. (Four jobs side by side took
    longer than one after another on 2 cores: a job's time is mostly its driver and actors starting.)"""
    outputs: dict[str, Path] = {}

    def get(config: str) -> Path:
        if config not in outputs:
            out = tmp_path_factory.mktemp("enc") / Path(config).stem
            _run(["jobs/encode_dataset.py", "--config", f"configs/encode/{config}", "--no-progress", f"output={out}",
                  *CHAINS[config][0]], cluster)
            outputs[config] = out
        return outputs[config]

    return get


def test_the_readme_runs_every_chain_but_the_s3_one():
    assert chains_left() == [("s3_buckets_bf16.yaml", "flow_prior.yaml")]


@pytest.mark.parametrize("encode,train", chains_left())
def test_shipped_train_config_trains_on_its_encode_configs_output(encoded, cluster, tmp_path, encode, train):
    out = encoded(encode)
    run_dir = tmp_path / "run"
    done = _run(["jobs/train_prior.py", "--config", f"configs/train/{train}", f"data.path={out}",
                 f"train.output_dir={run_dir}", "train.max_steps=2", "train.checkpoint_every=2", "train.eval_every=2",
                 "sample.num_samples=2", *SMALL_NETWORK[train]], cluster)
    result = json.loads(done.stdout.split("result: ", 1)[1])
    assert result["steps"] == 2 and (result.get("samples_png") or result.get("samples_mp4") or result.get("samples_wav"))
    batch = yaml.safe_load((ROOT / "configs" / "train" / train).read_text())["data"]["batch_size"]
    data_lines = [line for line in done.stdout.splitlines() if line.startswith("data: ")]
    assert len(data_lines) == 1 and f"batch_size {batch}," in data_lines[0]
    check_samples(run_dir)
