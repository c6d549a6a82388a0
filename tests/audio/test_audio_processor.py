"""The audio processor and its config: segments on the hop grid equal the decoder's own spans, the padding mask
shrinks to latent length, the config as run is what the codec records (and reads back), and bad files raise
the SampleErrors the job turns into error rows. Real files: the shipped CC0 WAVs, Big Buck Bunny's 5.1 AAC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentflow.errors import ConfigError
from latentflow.media.audio import decode_segment, latent_padding_mask, plan_segments
from latentflow.media.audio_processor import AudioProcessor
from latentflow.media.config import SEGMENT_FIELDS, AudioProcessorConfig
from latentflow.sources.records import SampleError

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT / "data" / "audio"
HOP, RATE = 32, 22050


def proc(**kw) -> AudioProcessor:
    return AudioProcessor(AudioProcessorConfig(**kw), hop_length=HOP, sample_rate=RATE, channels=1)


def test_config_as_run_takes_the_models_format_and_forces_whole_hops():
    p = proc(segment_seconds=1.0, duration_buckets=[0.25, 0.5])
    cfg = p.config
    assert (cfg.sample_rate, cfg.channels, cfg.hop_length) == (RATE, "mono", HOP)
    assert p.lengths == [172 * HOP, 345 * HOP, 689 * HOP]  # round(s * 22050 / 32) hops each
    assert round(cfg.segment_seconds * RATE) == 689 * HOP
    assert AudioProcessor(AudioProcessorConfig.from_dict(cfg.to_dict()), HOP).config == cfg  # as run: a fixed point
    assert AudioProcessor(AudioProcessorConfig(), HOP, RATE, channels=2).config.channels == "stereo"


@pytest.mark.parametrize("kw,model,match", [
    ({"sample_rate": 44100}, {}, "sample_rate=44100 but the model's is 22050"),
    ({"channels": "stereo"}, {}, "gives 2 channels but the model takes 1"),
    ({}, {"channels": 6}, "imply no rule"),
])
def test_a_config_that_contradicts_the_model_is_refused(kw, model, match):
    with pytest.raises(ConfigError, match=match):
        AudioProcessor(AudioProcessorConfig(**kw), HOP, RATE, **{"channels": 1, **model})


def test_segments_equal_the_decoders_spans_and_carry_their_fields():
    data = (AUDIO / "explosion1.wav").read_bytes()  # 1.55 s at 44.1 kHz, resampled to 22.05 kHz
    p = proc(segment_seconds=0.5, segment_mode="slide", segment_stride_s=0.25, max_segments_per_file=8)
    segments = p.process_segments(data, "boom")
    plan = plan_segments(1.5473015873015874, RATE, segment_seconds=0.5, hop_length=HOP, mode="slide",
                         stride_seconds=0.25, max_segments=8)
    assert [s.key for s in segments] == [f"boom/seg{i:04d}" for i in range(len(plan))]
    for seg, planned in zip(segments, plan):
        wave, mask = decode_segment(data, planned, channels="mono")  # each span decoded on its own
        np.testing.assert_allclose(seg.waveform, wave, atol=2e-6)
        assert seg.valid_length == int(latent_padding_mask(mask, HOP).sum())
        assert (seg.start_time, seg.duration, seg.sample_rate, seg.channels) == (planned.start / RATE, planned.length / RATE, RATE, 1)
    assert segments[-1].valid_length < segments[-1].waveform.shape[1] // HOP  # the last one is padded
    assert set(SEGMENT_FIELDS) - {"source_key"} <= set(dir(segments[0]))


def test_short_files_pad_with_a_mask_or_are_skipped_and_buckets_pick_the_longest_that_fits():
    data = (AUDIO / "jump3.wav").read_bytes()  # 0.27 s
    [padded] = proc(segment_seconds=1.0).process_segments(data, "jump")
    real = round(0.2703854875283447 * RATE)
    assert padded.valid_length == -(-real // HOP) and not padded.waveform[:, padded.valid_length * HOP:].any()
    with pytest.raises(SampleError) as err:
        proc(segment_seconds=1.0, short_audio="skip").process_segments(data, "jump")
    assert err.value.error_type == "audio_too_short" and "short_audio: pad" in err.value.message
    [bucketed] = proc(segment_seconds=1.0, duration_buckets=[0.25], short_audio="skip").process_segments(data, "jump")
    assert bucketed.waveform.shape == (1, 172 * HOP) and bucketed.valid_length == 172


def test_peak_and_rms_normalization_scale_the_real_samples():
    data = (AUDIO / "coin2.wav").read_bytes()
    [peak] = proc(segment_seconds=1.0, normalize="peak", target_db=-6.0).process_segments(data, "c")
    [rms] = proc(segment_seconds=1.0, normalize="rms", target_db=-20.0).process_segments(data, "c")
    n = peak.valid_length * HOP
    assert np.abs(peak.waveform).max() == pytest.approx(10 ** (-6 / 20), rel=1e-5)
    assert np.sqrt(np.mean(rms.waveform[:, :n].astype(np.float64) ** 2)) == pytest.approx(10 ** (-20 / 20), rel=1e-2)


def test_five_one_aac_of_a_video_is_downmixed_and_over_budget_files_are_refused_before_decoding():
    bbb = (ROOT / "data" / "videos" / "bigbuckbunny.mp4").read_bytes()  # 5.3 s, 48 kHz, 5.1 AAC
    stereo = AudioProcessor(AudioProcessorConfig(segment_seconds=2.0, segment_mode="uniform", num_segments=3), HOP, RATE, 2)
    segments = stereo.process_segments(bbb, "bbb")
    assert len(segments) == 3 and all(s.waveform.shape == (2, 1378 * HOP) for s in segments)
    assert segments[-1].start_time + segments[-1].duration <= 5.312
    with pytest.raises(SampleError) as err:
        proc(max_seconds_per_file=5.0).process_segments(bbb, "bbb")
    assert err.value.error_type == "over_budget"
    with pytest.raises(SampleError) as err:
        AudioProcessor(AudioProcessorConfig(channels="keep"), HOP, RATE, 2).process_segments(bbb, "bbb")
    assert err.value.error_type == "unmappable_channel_layout"
