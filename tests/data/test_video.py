"""Video decoding and the video processor: frames picked by timestamp (read back from frames that
carry their own index), clip counts per mode, k*stride+1 lengths, crop boxes and buckets, each bad
input's error type, and the shipped Big Buck Bunny clip."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from latentflow.errors import ConfigError
from latentflow.media.config import ImageProcessorConfig, VideoProcessorConfig
from latentflow.media.image import ImageProcessor
from latentflow.media.video import VideoProcessor, force_frames
from latentflow.media.video_decode import VideoReader, decoder_info, probe_video, resample, resolve_decoder
from latentflow.sources.records import SampleError, clip_key
from tests.video_samples import read_index, write_audio_only, write_empty_video, write_video

BBB = Path(__file__).resolve().parents[2] / "data" / "videos" / "bigbuckbunny.mp4"


@pytest.fixture(scope="module")
def ten_fps():
    """40 frames at 10 fps, 48x64, a keyframe every 10 frames."""
    return write_video(fps=10, size=(48, 64), num_frames=40, gop=10)


def indices(clip) -> list[int]:
    return [read_index(frame) for frame in clip.pixel_values.transpose(1, 0, 2, 3)]  # (T, 3, H, W)


def processor(**kwargs) -> VideoProcessor:
    kwargs.setdefault("resolution", 32)
    model_stride = kwargs.pop("model_stride", 4)
    return VideoProcessor(VideoProcessorConfig(**kwargs), downsample_factor=8, temporal_stride=model_stride)


# ---- decoding ------------------------------------------------------------------------


def test_probe_reads_the_header(ten_fps):
    info = probe_video(ten_fps)
    assert (info.has_video, info.height, info.width, info.fps, info.num_frames, info.codec) == (True, 48, 64, 10.0, 40, "h264")
    assert info.duration == pytest.approx(4.0)
    bbb = probe_video(BBB.read_bytes())
    assert (bbb.height, bbb.width, bbb.fps, bbb.num_frames, bbb.num_streams, bbb.codec) == (720, 1280, 25.0, 132, 2, "h264")
    assert probe_video(write_audio_only()).has_video is False


def test_native_fps_gives_every_frame_in_order(ten_fps):
    with VideoReader(ten_fps) as video:
        positions, times = resample(video.frame_index(), None)
        frames = video.decode(positions)
    assert [read_index(f) for f in frames] == list(range(40))
    np.testing.assert_allclose(times, np.arange(40) / 10)


@pytest.mark.parametrize("target", [4.0, 25.0, 3.0])
def test_resampling_picks_the_last_frame_at_or_before_each_time(ten_fps, target):
    with VideoReader(ten_fps) as video:
        positions, times = resample(video.frame_index(), target)
        frames = video.decode(positions)
    count = int(np.ceil(4.0 * target))  # every k / target before the end (4.0 s)
    expected = [int(np.floor(k * 10 / target + 1e-9)) for k in range(count)]
    assert positions.tolist() == expected
    assert [read_index(f) for f in frames] == expected
    np.testing.assert_allclose(times, np.arange(count) / target)


def test_variable_fps_frames_are_picked_by_timestamp():
    data = write_video(pts_s=[0.0, 0.1, 0.15, 0.4, 0.45, 0.9])
    with VideoReader(data) as video:
        index = video.frame_index()
        positions, _ = resample(index, 10.0)
        frames = video.decode(positions)
    np.testing.assert_allclose(index.times, [0.0, 0.1, 0.15, 0.4, 0.45, 0.9])
    assert [read_index(f) for f in frames] == [0, 1, 2, 2, 3, 4, 4, 4, 4, 5]  # t = 0.0, 0.1, ..., 0.9
    clips = processor(fps=10.0, num_frames=9).process_clips(data, "vfr")
    assert indices(clips[0]) == [0, 1, 2, 2, 3, 4, 4, 4, 4] and clips[0].fps == 10.0


def test_decode_seeks_to_the_keyframe_before_and_stops_after_the_last_frame(ten_fps):
    with VideoReader(ten_fps) as video:
        video.frame_index()
        frames = video.decode([32, 33, 35])
        assert [read_index(f) for f in frames] == [32, 33, 35]
        assert (video.stats.decoded, video.stats.needed, video.stats.seeks) == (6, 3, 1)  # frames 30..35 from keyframe 30
        assert video.frames_to_decode(np.array([5, 32])) == 6 + 3  # two GOPs, nothing between them
        frames = video.decode([35, 5, 5])  # any order, repeats allowed
        assert [read_index(f) for f in frames] == [35, 5, 5]


class _OvershootingSeeks:
    """A container whose seeks land one GOP after the keyframe asked for (as some demuxers do)."""

    def __init__(self, container):
        self._container = container

    def seek(self, offset, **kwargs):
        return self._container.seek(offset + 10 * 1024 if offset else 0, **kwargs)

    def __getattr__(self, name):
        return getattr(self._container, name)


def test_decode_recovers_from_a_seek_past_the_keyframe(ten_fps):
    with VideoReader(ten_fps) as video:
        video.frame_index()
        video._container = _OvershootingSeeks(video._container)
        assert [read_index(f) for f in video.decode([12, 13])] == [12, 13]
        assert video.stats.seeks == 2 and video.stats.decoded == 1 + 14  # lands at 20: past 13, stop; then 0..13


def test_decode_resizes_and_crops(ten_fps):
    with VideoReader(ten_fps) as video:
        video.frame_index()
        out = video.decode([3, 7], resize=(96, 128), crop=(0, 16, 96, 96))
    assert out.shape == (2, 96, 96, 3) and out.dtype == np.uint8
    assert [read_index(f) for f in out] == [3, 7]


@pytest.mark.parametrize("codec, container", [("libvpx-vp9", "webm"), ("mpeg4", "matroska"), ("libx264", "mov")])
def test_other_containers(codec, container):
    data = write_video(fps=10, num_frames=12, codec=codec, container=container)
    clips = processor(num_frames=9).process_clips(data, "v")
    assert indices(clips[0]) == list(range(9))


def test_decoder_choice_and_version():
    assert resolve_decoder("pyav") == "pyav"
    assert decoder_info("pyav") == {"name": "pyav", "version": av.__version__, "ffmpeg": str(av.ffmpeg_version_info)}
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        assert resolve_decoder("auto") == "pyav"
        with pytest.raises(ConfigError, match="torchcodec"):
            processor(decoder="torchcodec")


def test_torchcodec_picks_the_same_frames_as_pyav(ten_fps):
    pytest.importorskip("torchcodec")
    picked = {}
    for decoder in ("pyav", "torchcodec"):
        with VideoReader(ten_fps, decoder=decoder) as video:
            positions, _ = resample(video.frame_index(), 4.0)
            picked[decoder] = [read_index(f) for f in video.decode(positions, resize=(48, 64))]
    assert picked["torchcodec"] == picked["pyav"] == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27, 30, 32, 35, 37]


# ---- clips ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, starts", [
    ({"clip_mode": "head"}, [0]),
    ({"clip_mode": "uniform", "num_clips": 3}, [0, 16, 31]),  # spread over starts 0..31
    ({"clip_mode": "uniform", "num_clips": 1}, [0]),
    ({"clip_mode": "slide", "clip_stride_s": 1.0}, [0, 10, 20, 30]),
    ({"clip_mode": "slide", "clip_stride_s": 1.0, "max_clips_per_video": 2}, [0, 10]),
    ({"clip_mode": "slide", "clip_stride_s": 0.25}, [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28, 30]),
])
def test_clip_modes_cut_exact_clips(ten_fps, kwargs, starts):
    clips = processor(num_frames=9, **kwargs).process_clips(ten_fps, "v")
    assert [c.key for c in clips] == [clip_key("v", i) for i in range(len(starts))] == [f"v/clip{i:04d}" for i in range(len(starts))]
    assert [indices(c) for c in clips] == [list(range(s, s + 9)) for s in starts]
    assert [c.start_time for c in clips] == pytest.approx([s / 10 for s in starts])
    assert {(c.video_key, c.num_frames, c.fps, c.padded_frames, c.bucket) for c in clips} == {("v", 9, 10.0, 0, (9, 32, 32))}


def test_uniform_clips_are_capped_and_distinct(ten_fps):
    clips = processor(num_frames=33, clip_mode="uniform", num_clips=50, max_clips_per_video=16).process_clips(ten_fps, "v")
    assert [indices(c)[0] for c in clips] == [0, 1, 2, 3, 4, 5, 6, 7]  # 40 - 33 + 1 distinct starts
    clips = processor(num_frames=9, clip_mode="uniform", num_clips=50, max_clips_per_video=4).process_clips(ten_fps, "v")
    assert [indices(c)[0] for c in clips] == [0, 10, 21, 31]


def test_clips_at_a_target_fps(ten_fps):
    clips = processor(fps=5.0, num_frames=5, clip_mode="slide", clip_stride_s=1.5).process_clips(ten_fps, "v")
    assert [indices(c) for c in clips] == [[0, 2, 4, 6, 8], [16, 18, 20, 22, 24], [30, 32, 34, 36, 38]]
    assert [c.start_time for c in clips] == pytest.approx([0.0, 1.6, 3.0])  # the grid steps at or after 0, 1.5, 3.0 s


@pytest.mark.parametrize("num_frames, stride, forced",
                         [(16, 4, 13), (17, 4, 17), (81, 4, 81), (49, 4, 49), (100, 8, 97), (1, 4, 1), (20, 1, 20)])
def test_num_frames_is_forced_to_k_stride_plus_one(ten_fps, num_frames, stride, forced):
    assert force_frames(num_frames, stride) == forced
    proc = processor(num_frames=num_frames, model_stride=stride, short_clip="pad")
    assert proc.config.num_frames == forced and proc.config.temporal_stride == stride  # the recorded, forced value
    assert proc.process_clips(ten_fps, "v")[0].pixel_values.shape[1] == forced


def test_temporal_stride_must_agree_with_the_model():
    assert processor(num_frames=17, temporal_stride=8, model_stride=4).config.num_frames == 17  # 8 is a multiple of 4
    with pytest.raises(ConfigError, match="multiple of the model's temporal stride 4, got: 6"):
        processor(temporal_stride=6, model_stride=4)


def test_frame_buckets_take_the_longest_clip_that_fits():
    proc = processor(num_frames=17, frame_buckets=[5, 10], short_clip="skip")  # 10 -> 9
    assert proc.config.frame_buckets == [5, 9] and proc.lengths == [5, 9, 17]
    lengths = [proc.process_clips(write_video(fps=10, num_frames=n), "v")[0].bucket[0] for n in (5, 12, 20)]
    assert lengths == [5, 9, 17]
    with pytest.raises(SampleError) as err:
        proc.process_clips(write_video(fps=10, num_frames=4), "v")
    assert err.value.error_type == "clip_too_short"


def test_short_clips_are_skipped_or_padded():
    data = write_video(fps=10, num_frames=6)
    with pytest.raises(SampleError) as err:
        processor(num_frames=9).process_clips(data, "short")
    assert (err.value.stage, err.value.error_type) == ("process", "clip_too_short")
    assert "6 frames" in err.value.message and "needs 9" in err.value.message
    clips = processor(num_frames=9, short_clip="pad", clip_mode="slide", clip_stride_s=0.1).process_clips(data, "short")
    assert len(clips) == 1 and clips[0].padded_frames == 3 and clips[0].num_frames == 9
    assert indices(clips[0]) == [0, 1, 2, 3, 4, 5, 5, 5, 5]


def test_crop_boxes_center_random_and_buckets(ten_fps):
    clip = processor(num_frames=5).process_clips(ten_fps, "v")[0]
    assert (clip.original_size, clip.crop_box) == ((48, 64), (0, 5, 32, 32))  # resized to 32x43, centered
    random = processor(num_frames=5, crop="random", seed=3, clip_mode="slide", clip_stride_s=1.0)
    boxes = [c.crop_box for c in random.process_clips(ten_fps, "v")]
    geometry = ImageProcessor(ImageProcessorConfig(resolution=32, crop="random", seed=3), 8)
    assert boxes == [geometry.crop_geometry(48, 64, f"v/clip{i:04d}")[1] for i in range(4)]  # seeded by key_seed(seed, clip key)
    assert boxes == [c.crop_box for c in random.process_clips(ten_fps, "v")]
    # bucket_step=8: at 32 px the default step (2 x 8) leaves only the square bucket within aspect 2
    wide = processor(num_frames=5, buckets=True, bucket_step=8).process_clips(write_video(fps=10, size=(48, 96), num_frames=5), "w")[0]
    assert wide.bucket == (5, 24, 40) and wide.pixel_values.shape == (3, 5, 24, 40)  # about 32*32 px at aspect ~2
    assert wide.crop_box[2:] == (24, 40)


def test_pixels_are_uint8_codes_in_minus_one_one(ten_fps):
    values = processor(num_frames=5).process_clips(ten_fps, "v")[0].pixel_values
    assert values.dtype == np.float32 and values.min() >= -1.0 and values.max() <= 1.0
    codes = np.rint((values + 1.0) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(codes.astype(np.float32) / 127.5 - 1.0, values)  # travels as uint8 bit-exactly


# ---- bad input ---------------------------------------------------------------------------


def _truncated(faststart: bool) -> bytes:
    data = write_video(fps=10, num_frames=20, faststart=faststart)
    return data[: len(data) // 2]


@pytest.mark.parametrize("make, kwargs, stage, error_type", [
    (lambda: None, {}, "read", "missing_video"),
    (lambda: b"", {}, "decode", "empty_video"),
    (write_empty_video, {}, "decode", "empty_video"),
    (write_audio_only, {}, "decode", "no_video_stream"),
    (lambda: _truncated(False), {}, "decode", "corrupt_video"),  # the index (moov) is lost
    (lambda: _truncated(True), {}, "decode", "corrupt_video"),  # the index survives, the frames do not
    (lambda: b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4, {}, "decode", "corrupt_video"),
    (lambda: write_video(fps=10, num_frames=20), {"max_frames": 19}, "decode", "decompression_bomb"),
    (lambda: write_video(fps=10, num_frames=20, size=(48, 64)), {"max_pixels_per_video": 48 * 64 - 1}, "decode", "decompression_bomb"),
    (lambda: write_video(fps=10, num_frames=20, size=(48, 64)), {"max_pixels_per_video": 48 * 64 * 8}, "decode", "decompression_bomb"),
    (lambda: write_video(fps=10, num_frames=20, size=(6, 64)), {}, "process", "too_small"),
    (lambda: write_video(fps=10, num_frames=4), {}, "process", "clip_too_short"),
])
def test_each_bad_input_has_its_error_type(make, kwargs, stage, error_type):
    with pytest.raises(SampleError) as err:
        processor(num_frames=9, **kwargs).process_clips(make(), "bad")
    assert (err.value.stage, err.value.error_type) == (stage, error_type)
    assert "'bad'" in err.value.message


def test_a_video_with_audio_decodes_its_video():
    clips = processor(num_frames=9).process_clips(write_video(fps=10, num_frames=10, audio=True), "v")
    assert indices(clips[0]) == list(range(9))


# ---- config --------------------------------------------------------------------------------


def test_config_round_trips_and_refuses_bad_values():
    cfg = VideoProcessorConfig(fps=8, num_frames=33, clip_mode="slide", clip_stride_s=0.5, frame_buckets=[9, 17])
    assert VideoProcessorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown key 'frames'"):
        VideoProcessorConfig.from_dict({"frames": 3})
    with pytest.raises(ConfigError, match=r"clip_mode must be one of \['head', 'uniform', 'slide'\], got: 'random'"):
        VideoProcessorConfig(clip_mode="random")
    with pytest.raises(ConfigError, match="fps must be > 0, got: 0"):
        VideoProcessorConfig(fps=0)
    with pytest.raises(ConfigError, match=r"frame_buckets must be clip lengths in \[1, num_frames=17\], got: \[33\]"):
        VideoProcessorConfig(frame_buckets=[33])
    with pytest.raises(ConfigError, match="short_clip must be one of"):
        VideoProcessorConfig(short_clip="loop")


# ---- the shipped clip ------------------------------------------------------------------------


def test_the_shipped_clip_decodes_to_the_expected_clips():
    data = BBB.read_bytes()
    proc = VideoProcessor(VideoProcessorConfig(num_frames=17, resolution=256, clip_mode="uniform", num_clips=4), 8, 4)
    clips = proc.process_clips(data, "bbb")
    assert [c.pixel_values.shape for c in clips] == [(3, 17, 256, 256)] * 4
    assert [round(c.start_time, 2) for c in clips] == [0.0, 1.52, 3.08, 4.6]  # starts 0, 38, 77, 115 of 132 at 25 fps
    assert {(c.original_size, c.crop_box, c.fps) for c in clips} == {((720, 1280), (0, 99, 256, 256), 25.0)}
    assert all(c.pixel_values.std() > 0.1 for c in clips)  # real pictures, not a constant
    with VideoReader(data) as video:  # the head clip decodes its 17 frames and no more
        video.frame_index()
        video.decode(np.arange(17))
        assert (video.stats.decoded, video.stats.needed) == (17, 17)
