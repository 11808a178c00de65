"""The hand-written functional ResNet equals the module version: outputs, gradients, running statistics."""
import pytest
import torch

import resnets
from resnets.models.functional import resnet_forward


@pytest.mark.parametrize("name,size", [("resnet20", 32), ("resnet18", 64)])
@pytest.mark.parametrize("training", [True, False])
def test_functional_twin_matches_module(name, size, training):
    # In float64: in float32 the two sum in different orders, and where two inputs of ResNet-18's stem
    # max-pool lie within rounding of each other, the gradient can go to the other one (seen on an AVX2
    # CPU: 0.5% of conv1's largest gradient). In float64 they agree to about 1e-14.
    model = resnets.create_model(name, num_classes=10).double().train(training)
    # Non-trivial running statistics and affine parameters, so eval mode is really tested.
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.endswith(("running_mean", "bias")):
                v.normal_(0, 0.1)
            elif k.endswith(("running_var", "bn1.weight", "bn2.weight")):
                v.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = {k: state[k].requires_grad_() for k, _ in model.named_parameters()}
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    target = torch.randint(0, 10, (4,))

    out_module = model(x)
    torch.nn.functional.cross_entropy(out_module, target).backward()
    out_fn = resnet_forward(state, x, training=training)
    torch.nn.functional.cross_entropy(out_fn, target).backward()

    torch.testing.assert_close(out_fn, out_module, rtol=1e-10, atol=1e-10)
    for k, p in model.named_parameters():
        torch.testing.assert_close(params[k].grad, p.grad, rtol=1e-10, atol=1e-10, msg=k)
    for k, b in model.named_buffers():
        torch.testing.assert_close(state[k], b, rtol=1e-10, atol=1e-10, msg=k)
