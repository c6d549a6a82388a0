"""python data/build_audio_shards.py [--from-wheel /tmp/arcade/arcade-3.3.3-py3-none-any.whl]

Writes ``data/audio/shards/audio-000000.tar``, a WebDataset shard of the sixteen CC0 sound effects
in ``data/audio/`` (``<key>.wav``, the file unchanged, + ``<key>.txt``, a caption written for this
repository from the file's name). Deterministic: members are sorted, with mtime 0 and no owner, so
rerunning rewrites the same bytes.

``--from-wheel`` first (re)extracts the sixteen WAVs from the arcade 3.3.3 wheel
(``pip download --no-deps arcade==3.3.3 -d /tmp/arcade``), unchanged, into ``data/audio/``.
Licenses and the train/held-out split: ``data/audio/LICENSE.md``.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "audio"
WHEEL_DIR = "arcade/resources/assets/sounds/"
# key -> caption. The first twelve train models/audio-vae-tiny; HELDOUT never do.
CAPTIONS = {
    "coin2": "a short retro video game coin pickup sound",
    "error2": "a short retro video game error buzz",
    "explosion1": "a retro video game explosion, noisy and decaying",
    "fall3": "a retro video game falling sound, a descending tone",
    "gameover1": "a retro video game game-over jingle",
    "hit1": "a short retro video game hit sound",
    "jump3": "a retro video game jump sound, a rising tone",
    "laser4": "a retro video game laser shot",
    "lose3": "a retro video game losing jingle",
    "phaseJump1": "a stereo science-fiction phase jump whoosh",
    "rockHit2": "a stereo rock impact, recorded at 96 kHz",
    "upgrade1": "a retro video game power-up jingle",
    "explosion2": "a retro video game explosion, noisy and decaying",
    "gameover3": "a retro video game game-over jingle",
    "secret2": "a retro video game secret-found jingle",
    "upgrade3": "a retro video game power-up jingle",
}
HELDOUT = ("explosion2", "gameover3", "secret2", "upgrade3")
TRAIN = tuple(k for k in CAPTIONS if k not in HELDOUT)


def extract_from_wheel(wheel: Path) -> None:
    """Copy the sixteen WAVs, byte for byte, out of the arcade 3.3.3 wheel into ``data/audio/``."""
    with zipfile.ZipFile(wheel) as zf:
        for key in CAPTIONS:
            (ROOT / f"{key}.wav").write_bytes(zf.read(f"{WHEEL_DIR}{key}.wav"))


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shard() -> Path:
    out = ROOT / "shards" / "audio-000000.tar"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key in sorted(CAPTIONS):
            add_member(tar, f"{key}.wav", (ROOT / f"{key}.wav").read_bytes())
            add_member(tar, f"{key}.txt", (CAPTIONS[key] + "\n").encode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-wheel", type=Path, default=None, help="arcade-3.3.3-py3-none-any.whl to extract the WAVs from")
    args = parser.parse_args()
    if args.from_wheel is not None:
        extract_from_wheel(args.from_wheel)
    path = write_shard()
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(CAPTIONS)} samples)")


if __name__ == "__main__":
    main()
