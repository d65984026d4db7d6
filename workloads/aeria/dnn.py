"""The four multi-exit DNNs whose profiles the aeria market prices (plain torch, no torchvision).

Every net is a `MultiExitNet`: a backbone `layers` whose elements are the partition points a
device can split at (a conv block, a residual block, pooling+flatten, a linear layer) and exit
heads `exits`, head e reading the output of backbone layer `exit_after[e]`. The last exit is the
final classifier: the backbone ends in the classifying Linear, so that exit's head is an
`nn.Identity` and costs nothing extra. Widths are narrow so that all four train on CPU in minutes;
BatchNorm replaces AlexNet's LRN for the same reason.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

NUM_CLASSES = 10


class MultiExitNet(nn.Module):
    """A backbone of partition points plus early-exit heads (BranchyNet-style)."""

    def __init__(self, layers: list[tuple[str, nn.Module]], exits: list[tuple[int, nn.Module]]):
        super().__init__()
        self.layer_names = [name for name, _ in layers]
        self.layers = nn.ModuleList(module for _, module in layers)
        self.exit_after = [after for after, _ in exits]
        self.exits = nn.ModuleList(head for _, head in exits)
        _check_exit_positions(self.exit_after, len(self.layers))
        self._exit_at = {after: e for e, after in enumerate(self.exit_after)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, shallowest first (each (batch, classes))."""
        logits = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self._exit_at:
                logits.append(self.exits[self._exit_at[i]](x))
        return logits


def _check_exit_positions(exit_after: list[int], num_layers: int) -> None:
    """Exits must sit strictly deeper one after another and the last must follow the last layer."""
    if any(b <= a for a, b in zip(exit_after, exit_after[1:])):
        raise ValueError(f"exit_after must be strictly increasing, got {exit_after}")
    if not exit_after or exit_after[-1] != num_layers - 1:
        raise ValueError(f"the last exit must read layer {num_layers - 1}, got {exit_after}")


# ---- building blocks -------------------------------------------------------------------------

def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, pool: bool = False,
                 groups: int = 1, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Conv -> BN -> activation (-> 2x2 max-pool): the unit every backbone here is made of."""
    parts: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout), act(inplace=True)]
    if pool:
        parts.append(nn.MaxPool2d(2))
    return nn.Sequential(*parts)


def conv_exit_head(cin: int, width: int, pool_to: int = 2, stride: int = 1) -> nn.Sequential:
    """A side branch: one conv, a small spatial pool, a linear classifier (as BranchyNet's)."""
    return nn.Sequential(conv_bn_relu(cin, width, 3, stride), nn.AdaptiveAvgPool2d(pool_to),
                         nn.Flatten(), nn.Linear(width * pool_to * pool_to, NUM_CLASSES))


def pool_flatten(pool_to: int = 1) -> nn.Sequential:
    """Global (or small) average pool + flatten: the partition point between convs and FCs."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(pool_to), nn.Flatten())


def linear_relu(fin: int, fout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(fin, fout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(cin, cout, 3, stride),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear project (+ residual)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        parts: list[nn.Module] = []
        if expand != 1:
            parts.append(conv_bn_relu(cin, hidden, 1, act=nn.ReLU6))
        parts += [conv_bn_relu(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*parts)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


# ---- the four nets ---------------------------------------------------------------------------

def branchy_alexnet() -> MultiExitNet:
    """B-AlexNet (Teerapittayanon et al., BranchyNet 2016) for 3x32x32: 5 convs, 3 FCs, 3 exits."""
    layers = [
        ("conv1", conv_bn_relu(3, 32, 5, pool=True)),     # 32x16x16
        ("conv2", conv_bn_relu(32, 64, 5, pool=True)),    # 64x8x8
        ("conv3", conv_bn_relu(64, 96)),
        ("conv4", conv_bn_relu(96, 96)),
        ("conv5", conv_bn_relu(96, 64, pool=True)),       # 64x4x4
        ("flatten", nn.Flatten()),
        ("fc1", linear_relu(64 * 4 * 4, 256)),
        ("fc2", linear_relu(256, 128)),
        ("fc3", nn.Linear(128, NUM_CLASSES)),
    ]
    exits = [(0, conv_exit_head(32, 32, pool_to=4, stride=2)),
             (1, conv_exit_head(64, 64, pool_to=2)),
             (8, nn.Identity())]
    return MultiExitNet(layers, exits)


def vgg() -> MultiExitNet:
    """A small VGG for 3x32x32: three stages of two 3x3 convs (16/32/64 wide), 2 FCs, 4 exits."""
    layers = [
        ("conv1_1", conv_bn_relu(3, 16)), ("conv1_2", conv_bn_relu(16, 16, pool=True)),
        ("conv2_1", conv_bn_relu(16, 32)), ("conv2_2", conv_bn_relu(32, 32, pool=True)),
        ("conv3_1", conv_bn_relu(32, 64)), ("conv3_2", conv_bn_relu(64, 64, pool=True)),
        ("pool_flatten", pool_flatten(2)),                 # 64*2*2
        ("fc1", linear_relu(256, 128)),
        ("fc2", nn.Linear(128, NUM_CLASSES)),
    ]
    exits = [(1, conv_exit_head(16, 32, pool_to=2, stride=2)),
             (3, conv_exit_head(32, 32, pool_to=2)),
             (5, conv_exit_head(64, 64, pool_to=1)),
             (8, nn.Identity())]
    return MultiExitNet(layers, exits)


def resnet(widths: tuple[int, ...] = (16, 32, 64, 128)) -> MultiExitNet:
    """ResNet-18 layout (stem + 4 stages x 2 basic blocks) at narrow widths, 4 exits."""
    layers: list[tuple[str, nn.Module]] = [("stem", conv_bn_relu(3, widths[0]))]
    cin = widths[0]
    for stage, width in enumerate(widths, start=1):
        for block in (1, 2):
            stride = 2 if stage > 1 and block == 1 else 1
            layers.append((f"block{stage}_{block}", BasicBlock(cin, width, stride)))
            cin = width
    layers += [("pool_flatten", pool_flatten(1)), ("fc", nn.Linear(cin, NUM_CLASSES))]
    exits = [(2, conv_exit_head(widths[0], 32, pool_to=2, stride=2)),   # after stage 1
             (4, conv_exit_head(widths[1], 32, pool_to=2)),              # after stage 2
             (6, conv_exit_head(widths[2], 64, pool_to=1)),              # after stage 3
             (len(layers) - 1, nn.Identity())]
    return MultiExitNet(layers, exits)


# (expand t, out channels c, stride s) per inverted-residual block, for 1x28x28 digits
MOBILENET_BLOCKS = ((1, 8, 1), (4, 16, 2), (4, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 1))


def mobilenet() -> MultiExitNet:
    """MobileNetV2-style net for MNIST (1x28x28): stem, 6 inverted residuals, 1x1 conv, 3 exits."""
    layers: list[tuple[str, nn.Module]] = [("stem", conv_bn_relu(1, 16, act=nn.ReLU6))]
    cin = 16
    for i, (expand, cout, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        layers.append((f"ir{i}", InvertedResidual(cin, cout, stride, expand)))
        cin = cout
    layers += [("conv_last", conv_bn_relu(cin, 64, 1, act=nn.ReLU6)),
               ("pool_flatten", pool_flatten(1)), ("fc", nn.Linear(64, NUM_CLASSES))]
    exits = [(2, conv_exit_head(16, 16, pool_to=2)),     # after the first downsampling (14x14)
             (4, conv_exit_head(24, 32, pool_to=2)),     # after the second (7x7)
             (len(layers) - 1, nn.Identity())]
    return MultiExitNet(layers, exits)


# name -> (builder, dataset its exits are measured on, input shape of one sample (C, H, W))
DNNS: dict[str, tuple[Callable[[], MultiExitNet], str, tuple[int, int, int]]] = {
    "branchy_alexnet": (branchy_alexnet, "cifar10", (3, 32, 32)),
    "vgg": (vgg, "cifar10", (3, 32, 32)),
    "resnet": (resnet, "cifar10", (3, 32, 32)),
    "mobilenet": (mobilenet, "mnist", (1, 28, 28)),
}
