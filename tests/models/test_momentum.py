"""Momentum ResNets: the invertible backward gives backpropagation's gradients, keeps batch-norm statistics
and stores far less; bad settings are refused."""
import copy

import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets import ConfigError
from resnets.models import momentum
from resnets.models.momentum import MomentumStage


def _pair(layers, seed=0):
    torch.manual_seed(seed)
    invertible = resnets.create_model("momentumnet20", layers=layers).train()
    stored = copy.deepcopy(invertible)
    for stage in stored.stages:
        stage.invertible = False
    return invertible, stored


def _grads(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("layers", [(3, 3, 3), (20, 2, 2)])  # the second reverses across kept states
def test_the_invertible_backward_gives_backpropagations_gradients(layers):
    invertible, stored = _pair(layers)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    a, b = _grads(invertible, x, y), _grads(stored, x, y)
    assert ((a - b).norm() / b.norm()).item() < 1e-5  # float32 noise
    for (name, p), q in zip(invertible.named_buffers(), stored.buffers()):  # counted once, as backprop does
        if name.endswith("num_batches_tracked"):
            assert torch.equal(p, q) and p.item() == 1, name
        else:
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_the_reversal_is_exact_in_float64_and_keeps_states_only_every_few_steps():
    invertible, stored = _pair((2 * momentum.ANCHOR_EVERY + 3, 1, 1))
    invertible, stored = invertible.double(), stored.double()
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (2,))
    a, b = _grads(invertible, x, y), _grads(stored, x, y)
    assert ((a - b).norm() / b.norm()).item() < 1e-12

    def saved_bytes(model):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        return total

    # the first stage's 2 * 8 + 2 momentum steps: backprop keeps several activations a block, the reversal the
    # output state and 2 states (x, v) every ANCHOR_EVERY steps
    assert saved_bytes(invertible) < 0.35 * saved_bytes(stored)


def test_evaluation_is_the_momentum_network_itself():
    invertible, stored = _pair((3, 3, 3))
    invertible.eval(), stored.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(invertible(x), stored(x), rtol=0, atol=0)
    plain = resnets.create_model("resnet20").eval()
    invertible.load_state_dict(plain.state_dict())  # the same names: a ResNet's weights load unchanged
    with torch.no_grad():
        assert not torch.allclose(invertible(x), plain(x))  # but momentum steps compute something else


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="gamma must be in"):
        resnets.create_model("resnet20", momentum=1.0)
    with pytest.raises(ConfigError, match="stochastic depth"):
        resnets.create_model("resnet20", momentum=0.9, drop_path_rate=0.1)
    with pytest.raises(ConfigError, match="identity shortcuts"):
        resnets.create_model("plain20", momentum=0.9)
    assert isinstance(resnets.create_model("resnet18", momentum=0.9).layer2, MomentumStage)  # ImageNet ResNets too
