import pytest
import torch

from neumeta_cl.errors import ConfigError
from neumeta_cl.nets import CNN, MLP, MultiHead, build_model


def test_mlp_widths_depth_and_output_shape():
    net = MLP((1, 28, 28), [256, 128], n_classes=10)
    assert net.widths == [256, 128] and net.depth == 2
    assert net(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    # widths are read off the modules: editing a block changes them
    net.blocks[1][0] = torch.nn.Linear(256, 64)
    assert net.widths == [256, 64]


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (1, 40)])
def test_cnn_runs_on_images_and_signals(shape):
    net = CNN(shape, [8, 16, 16], n_classes=10)
    assert net.widths == [8, 16, 16]
    assert net(torch.randn(3, *shape)).shape == (3, 10)


def test_multihead_routes_each_sample_to_its_task_head():
    torch.manual_seed(0)
    net = MLP((1, 8, 8), [32], n_classes=10, heads=[2, 2, 2])
    assert isinstance(net.head, MultiHead) and net.head.sizes == [2, 2, 2]
    x = torch.randn(6, 1, 8, 8)
    t = torch.tensor([0, 2, 1, 0, 2, 1])
    mixed = net(x, t)
    for i in range(6):
        alone = net(x[i : i + 1], t[i : i + 1])
        torch.testing.assert_close(mixed[i : i + 1], alone)
    with pytest.raises(ValueError, match="task labels"):
        net(x)


def test_multihead_pads_smaller_heads_with_minus_inf():
    net = MLP((4,), [8], n_classes=5, heads=[3, 2])
    out = net(torch.randn(2, 4), torch.tensor([0, 1]))
    assert out.shape == (2, 3) and torch.isinf(out[1, 2]) and torch.isfinite(out[0]).all()


def test_build_model_rejects_unknown_names_and_keys():
    with pytest.raises(ConfigError, match="valid models are: cnn, mlp"):
        build_model({"name": "resnet"}, (1, 8, 8), 10, None)
    with pytest.raises(ConfigError, match="Invalid model config"):
        build_model({"name": "mlp", "widths": [8], "depth": 3}, (1, 8, 8), 10, None)
