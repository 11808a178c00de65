"""Property-based fuzzing of the configuration (hypothesis): any settings of any type, from Python or a recipe
file, give a valid ``TrainConfig`` or one ``ConfigError`` line naming the setting; never another exception."""
from dataclasses import fields

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnets import ConfigError
from resnets.engine.config import TrainConfig, make_config

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
NAMES = [f.name for f in fields(TrainConfig)]
VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10 ** 12, 10 ** 12) | st.floats() | st.text(max_size=20),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3),
                      max_leaves=6)
SETTINGS = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=12), VALUES, max_size=4)


def _made(build):
    try:
        cfg = build()
    except ConfigError as e:
        assert "\n" not in str(e)
        return None
    assert isinstance(cfg, TrainConfig)
    return cfg


@FUZZ
@given(overrides=SETTINGS)
def test_any_settings_give_a_config_or_one_line(overrides):
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = _made(lambda: make_config(None, **overrides))
    if cfg is not None:  # what was accepted is what the config holds
        for k, v in overrides.items():
            assert getattr(cfg, k) == v or isinstance(v, (int, float, list))


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4) | VALUES)
def test_any_recipe_file_gives_a_config_or_one_line(tmp_path, doc):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    _made(lambda: make_config(str(path)))
