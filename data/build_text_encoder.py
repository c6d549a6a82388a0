"""python data/build_text_encoder.py

Writes ``data/text_encoders/t5-tiny-random/``: a 2-layer T5 encoder (d_model 32) with RANDOM weights and a
word-level fast tokenizer (``tokenizer.json``), saved with ``save_pretrained`` as a user's local folder would
be (deterministic: seed 0). It exists so that ``configs/encode/captioned.yaml`` runs on a fresh checkout and
chains into ``configs/train/flow_prior_text.yaml``; its embeddings carry no meaning. For real training, point
``text_encoders[].model`` at a real encoder folder (a T5 v1.1 / UMT5 / CLIP text model, or a family preset
of ``latentflow.encode.text_presets``). Built with the test suite's tiny encoder (``tests/encode/tiny_text.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.encode.tiny_text import t5_folder  # noqa: E402

if __name__ == "__main__":
    out = ROOT / "data" / "text_encoders" / "t5-tiny-random"
    t5_folder(out)
    (out / "README.md").write_text(
        "# t5-tiny-random\n\nA 2-layer T5 encoder (d_model 32) with **random weights** and a word-level tokenizer, "
        "written by `python data/build_text_encoder.py` so that `configs/encode/captioned.yaml` runs on a fresh "
        "checkout. Its embeddings carry no meaning: use a real text encoder folder to train.\n")
    print(out)
