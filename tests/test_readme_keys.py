"""The README's config key tables are generated from the job config dataclasses (one declaration): each table
between its markers equals ``config_markdown`` of its class. To regenerate: ``python tests/test_readme_keys.py``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _jobs():
    from latentflow.evaluation.config import EvalJobConfig
    from latentflow.jobs.config import EncodeJobConfig
    from latentflow.training.config import TrainAutoencoderConfig, TrainPriorConfig

    return {c.__name__: c for c in (EncodeJobConfig, TrainAutoencoderConfig, TrainPriorConfig, EvalJobConfig)}


def _section(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- keys:{name} -->\n)(.*?)(<!-- /keys:{name} -->)", flags=re.S)


@pytest.mark.parametrize("name", sorted(_jobs()))
def test_readme_key_table_is_generated_from_the_dataclass(name):
    from latentflow.config_cli import config_markdown

    found = _section(name).search(README.read_text())
    assert found, f"README.md has no <!-- keys:{name} --> table"
    assert found.group(2).strip() == config_markdown(_jobs()[name]).strip(), "regenerate: python tests/test_readme_keys.py"


if __name__ == "__main__":
    sys.path.insert(0, str(README.parent))
    from latentflow.config_cli import config_markdown

    text = README.read_text()
    for name, cls in _jobs().items():
        text = _section(name).sub(lambda m, cls=cls: m.group(1) + config_markdown(cls).strip() + "\n" + m.group(3), text)
    README.write_text(text)
