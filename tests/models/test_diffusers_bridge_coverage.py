"""The claim "every diffusers autoencoder loads" stays true: each autoencoder class the installed diffusers
exports is bridged (a rule and a tiny config), native, or left out with its reason, and nothing stale is listed."""

from __future__ import annotations

import importlib
import inspect

import pytest

from latentflow.auto import model_class_for, model_type_of
from latentflow.models.diffusers_bridge import FAMILIES, NATIVE, NOT_BRIDGED
from tests.models.bridge_fixtures import TINY, diffusers_or_skip


def exported_autoencoders() -> list[str]:
    """Names ``diffusers`` exports whose class is a ``ModelMixin`` defined under ``diffusers.models.autoencoders``."""
    diffusers = diffusers_or_skip()
    from diffusers.models.modeling_utils import ModelMixin

    package = importlib.import_module("diffusers.models.autoencoders")
    names = []
    for name, obj in vars(package).items():
        if inspect.isclass(obj) and issubclass(obj, ModelMixin) and obj.__module__.startswith(package.__name__ + "."):
            assert getattr(diffusers, name) is obj, f"{name} is not exported by diffusers itself"
            names.append(name)
    return sorted(names)


def test_every_exported_autoencoder_has_a_home():
    homeless = [n for n in exported_autoencoders() if n not in FAMILIES and n not in NATIVE and n not in NOT_BRIDGED]
    assert not homeless, (f"diffusers exports autoencoders the bridge does not know: {homeless}; add a Family (rule citing "
                          "its pipeline function, tiny config in tests/models/bridge_fixtures.py) or a NOT_BRIDGED reason")


def test_the_count_for_the_pinned_diffusers():
    diffusers = diffusers_or_skip()
    names = exported_autoencoders()
    if diffusers.__version__ == "0.42.1":
        assert len(names) == 40  # 35 bridged + AutoencoderKL, AutoencoderOobleck native + 3 left out with reasons
    assert sorted(FAMILIES) == sorted(TINY)  # every bridged class is tested on a tiny config


def test_nothing_stale_or_listed_twice():
    exported = set(exported_autoencoders())
    homes = [set(FAMILIES), set(NATIVE), set(NOT_BRIDGED)]
    assert all(not (a & b) for i, a in enumerate(homes) for b in homes[i + 1:])
    assert set().union(*homes) <= exported, f"listed but not exported: {sorted(set().union(*homes) - exported)}"


@pytest.mark.parametrize("name", NATIVE)
def test_native_classes_route_to_a_registered_model(name):
    model_type = model_type_of({"_class_name": name, "_diffusers_version": "0.42.1"})
    assert model_type != "diffusers" and model_class_for(model_type).config_class.model_type == model_type
