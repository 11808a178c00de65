"""The default job (`resnets train` with no arguments) reaches the promised accuracy on the digits."""
import pytest
import resnets

pytestmark = pytest.mark.slow  # the whole default training run


def test_default_recipe_reaches_97_percent_on_the_digits_test_split(tmp_path):
    cfg = resnets.make_config("digits", out=str(tmp_path / "run"), progress=False, tensorboard=False)
    result = resnets.train(cfg)
    assert result.test is not None and result.test.n == 360
    assert result.test.top1 >= 97.0, result.test.top1
