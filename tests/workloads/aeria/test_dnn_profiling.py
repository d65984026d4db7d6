"""Specification of the multi-exit nets, their hook-based profiling and the shipped table."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from workloads.aeria.dnn import DNNS, MultiExitNet, pool_flatten
from workloads.aeria.profiles import load_profiles
from workloads.aeria.profiling import (count_flops, exit_accuracy, images_to_tensor,
                                       joint_exit_loss, layer_output_bytes,
                                       measure_layer_latency, train_multi_exit)
from workloads.common.images import load_cifar10, load_mnist


def _single_conv_net(groups: int = 1) -> MultiExitNet:
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=groups)
    head = nn.Sequential(pool_flatten(1), nn.Linear(8, 10))
    return MultiExitNet([("conv", nn.Conv2d(3, 8, 1)), ("conv2", conv), ("pool", pool_flatten(1)),
                         ("fc", nn.Linear(16, 10))], [(0, head), (3, nn.Identity())])


@pytest.mark.parametrize("name", sorted(DNNS))
def test_every_net_returns_one_logits_tensor_per_exit(name):
    builder, _, input_shape = DNNS[name]
    net = builder()
    logits = net(torch.randn(2, *input_shape))
    assert len(logits) == len(net.exits) == len(net.exit_after) >= 3
    assert all(z.shape == (2, 10) for z in logits)
    assert sum(p.numel() for p in net.parameters()) < 2_000_000


def test_conv_and_linear_flops_match_the_closed_form_and_go_to_their_owner():
    net = _single_conv_net()
    layer_flops, head_flops = count_flops(net, torch.randn(1, 3, 10, 10))
    assert layer_flops == [2 * 8 * 100 * 3 * 1, 2 * 16 * 100 * 8 * 9, 0, 2 * 16 * 10]
    assert head_flops == [2 * 8 * 10, 0]


def test_grouped_conv_flops_divide_input_channels_by_groups():
    layer_flops, _ = count_flops(_single_conv_net(groups=8), torch.randn(1, 3, 10, 10))
    assert layer_flops[1] == 2 * 16 * 100 * (8 // 8) * 9


def test_flops_are_per_sample_whatever_the_batch():
    net = _single_conv_net()
    one, four = torch.randn(1, 3, 10, 10), torch.randn(4, 3, 10, 10)
    assert count_flops(net, four) == count_flops(net, one)


def test_output_bytes_are_float32_size_of_one_sample():
    assert layer_output_bytes(_single_conv_net(), torch.randn(5, 3, 10, 10)) == [
        8 * 100 * 4, 16 * 100 * 4, 16 * 4, 10 * 4]


def test_exits_must_deepen_and_end_after_the_last_layer():
    layers = [("a", nn.Flatten()), ("b", nn.Linear(4, 10))]
    with pytest.raises(ValueError):
        MultiExitNet(layers, [(1, nn.Identity()), (0, nn.Identity())])
    with pytest.raises(ValueError):
        MultiExitNet(layers, [(0, nn.Linear(4, 10))])


@pytest.mark.parametrize("name", sorted(DNNS))
def test_profile_numbers_are_positive_and_exits_sit_inside_the_backbone(name):
    builder, _, input_shape = DNNS[name]
    net, x = builder(), torch.randn(1, *input_shape)
    layer_flops, head_flops = count_flops(net, x)
    assert sum(layer_flops) > 0 and all(f > 0 for f in head_flops[:-1]) and head_flops[-1] == 0
    assert all(b > 0 for b in layer_output_bytes(net, x))
    assert all(ms > 0 for ms in measure_layer_latency(net, x, repeats=2, warmup=1))
    assert np.all(np.diff(net.exit_after) > 0) and net.exit_after[-1] == len(net.layers) - 1
    assert len(net.layer_names) == len(net.layers)


def test_train_multi_exit_lowers_the_joint_loss_on_real_images():
    images, labels = load_cifar10("test")
    x, y = images_to_tensor(images[::31][:64]), torch.from_numpy(labels[::31][:64])
    torch.manual_seed(0)
    net = DNNS["vgg"][0]()

    def loss() -> float:
        with torch.no_grad():
            return joint_exit_loss(net.train()(x), y).item()

    before = loss()
    epoch_losses = train_multi_exit(net, x, y, epochs=1, seed=0, batch_size=16)
    assert len(epoch_losses) == 1 and loss() < before
    assert all(0.0 <= a <= 1.0 for a in exit_accuracy(net, x, y))


def test_shipped_profiles_cover_the_four_nets_in_sync_with_their_architecture():
    profiles = load_profiles()
    assert set(profiles) == set(DNNS)
    for name, p in profiles.items():
        net = DNNS[name][0]()
        assert p.dataset == DNNS[name][1]
        assert p.layer_names == tuple(net.layer_names)
        assert list(p.exit_after) == net.exit_after
        assert np.all((p.exit_accuracy >= 0) & (p.exit_accuracy <= 1))
        assert p.exit_accuracy[-1] >= p.exit_accuracy[0]
        assert np.all(p.layer_flops >= 0) and np.all(p.layer_out_bytes > 0)
        assert np.all(p.layer_cpu_ms > 0)


def test_image_loaders_return_documented_shapes_dtypes_and_ten_classes():
    for split, n in (("train", 4000), ("test", 2000)):
        images, labels = load_cifar10(split)
        assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    assert train_x.shape == (8000, 28, 28) and test_x.shape == (2000, 28, 28)
    assert train_x.dtype == np.uint8 and set(test_y.tolist()) == set(range(10))
    assert np.array_equal(load_mnist("test")[1], test_y)  # the split is deterministic
    with pytest.raises(ValueError):
        load_mnist("validation")


def test_images_to_tensor_puts_channels_first():
    assert images_to_tensor(np.zeros((2, 28, 28), np.uint8)).shape == (2, 1, 28, 28)
    assert images_to_tensor(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 3, 32, 32)
