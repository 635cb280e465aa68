"""Convolutional network builders: a small MNIST conv net, VGGSNN and ResNet19 (TET).

Every builder returns a :class:`~snn_core.network.Network` whose input is the
flattened image ``(T, batch, C*H*W)`` (channel-major, :mod:`snn_core.geometry`)
and whose output is ``(T, batch, classes)``. The layer lists follow the
reference models of the paper (ESL-SNNs follow TET, Deng et al. 2021):

- a *block* is 3x3 conv (stride 1, padding 1, no bias) -> :class:`BatchNorm2d`
  (tdBN) -> :class:`~snn_core.layers.LIF`; average pooling 2x2 between
  stages with no neuron after it;
- ``vggsnn``: 64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-512C3-AP2,
  then one linear classifier applied at every time step;
- ``resnet19``: 3x3 conv 3->64 + BN + LIF; basic blocks (conv-BN-LIF-conv-BN,
  add the shortcut, then LIF) in stages of 128 (3 blocks), 256 (3, stride 2),
  512 (2, stride 2); 1x1 conv + BN shortcuts where the shape changes; global
  average pool; Linear 512->256, LIF, Linear 256->classes.

``width`` scales every channel count (``max(1, round(c * width))``) so small
versions run on a laptop; the classifier sizes follow. ``sparse=True`` makes
every synaptic layer sparse (:class:`SparseConv2d`, SparseLinear), with exact
per-layer connection counts from :func:`snn_core.structure.sparse_init`
(``init``, ``dense_first``, ``layer_density``: a dict {layer name: density}
holding those layers at a fixed density while the others share the rest);
``sparse=False`` builds the dense control.
``output="readout"`` ends in a leaky-integrator readout (membrane losses);
``"linear"`` ends with the classifier's per-step current (TET's output).
"""
from __future__ import annotations

import numpy as np

from .conv import AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, ResidualBlock, SparseConv2d
from .layers import LIF, Linear, Readout, SparseLinear
from .network import Network
from .neurons import LIFParams
from .structure.init import sparse_init

__all__ = ["convnet", "vggsnn", "resnet19", "VGGSNN_LAYERS", "RESNET19_STAGES", "MODELS", "IO_LAYERS"]

#: the paper's VGGSNN layer list: conv channels, "A" = 2x2 average pooling
VGGSNN_LAYERS = (64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A")
#: ResNet19 (TET): (channels, blocks, stride of the first block) per stage
RESNET19_STAGES = ((128, 3, 1), (256, 3, 2), (512, 2, 2))
#: names ``snn-esl train --model`` accepts
MODELS = ("mlp", "convnet", "vggsnn", "resnet19")
#: per conv model, the layers whose shapes fix the network's input and class
#: count: (first conv, its batch norm, output layer). The first conv keeps the
#: image size (3x3, stride 1, padding 1), so input features = its input
#: channels x the pixels of its batch norm. A checkpoint is read through
#: these names, never through the order of its layers.
IO_LAYERS = {"convnet": ("conv1", "bn1", "fc"), "vggsnn": ("conv1", "bn1", "fc"), "resnet19": ("conv0", "bn0", "fc2")}


def _scaled(c, width):
    return max(1, int(round(c * width)))


class _Builder:
    """Appends layers while tracking the current (channels, h, w) and giving unique names."""

    def __init__(self, input_shape, sparse, density, hidden, seed, gain, dtype):
        c, h, w = (int(v) for v in input_shape)
        if min(c, h, w) < 1:
            raise ValueError(f"input_shape: expected positive (channels, height, width), got {tuple(input_shape)}")
        self.shape = (c, h, w)
        self.sparse, self.density, self.seed, self.gain, self.dtype = sparse, density, seed, gain, dtype
        self.hidden = hidden
        self.rngs = iter(np.random.default_rng(seed).spawn(4096))

    def conv(self, c_out, kernel=3, stride=1, padding=1, name="conv", shape=None):
        c, h, w = self.shape if shape is None else shape
        kw = dict(input_size=(h, w), seed=next(self.rngs), gain=self.gain, dtype=self.dtype, name=name)
        if self.sparse:
            layer = SparseConv2d(c, c_out, kernel, stride, padding, density=self.density, **kw)
        else:
            layer = Conv2d(c, c_out, kernel, stride, padding, **kw)
        g = layer.geometry
        return layer, (g.c_out, g.oh, g.ow)

    def block(self, c_out, i, stride=1):
        """conv -> BN -> LIF; updates the shape."""
        conv, self.shape = self.conv(c_out, stride=stride, name=f"conv{i}")
        c, h, w = self.shape
        return [conv, self.bn(c, h, w, f"bn{i}"),
                LIF(c * h * w, self.hidden, dtype=self.dtype, name=f"lif{i}")]

    def bn(self, c, h, w, name):
        """tdBN scaled to the neuron: gamma starts at v_th / c (c = the LIF input gain), so a
        normalised input of 1 alone brings a resting neuron to threshold, as tdBN's alpha * V_th does
        for a neuron that adds its input unscaled."""
        return BatchNorm2d(c, (h, w), v_th=self.hidden.v_th / self.hidden.c, dtype=self.dtype, name=name)

    def pool(self, i, kind="avg", kernel=2):
        c, h, w = self.shape
        cls = AvgPool2d if kind == "avg" else MaxPool2d
        layer = cls(c, (h, w), kernel, dtype=self.dtype, name=f"pool{i}")
        self.shape = (c, h // kernel, w // kernel)
        return [layer]

    def linear(self, n_in, n_out, name):
        if self.sparse:
            return SparseLinear(n_in, n_out, self.density, seed=next(self.rngs), gain=self.gain, dtype=self.dtype,
                                name=name)
        return Linear(n_in, n_out, seed=next(self.rngs), gain=self.gain, dtype=self.dtype, name=name)

    def head(self, n_classes, output, readout):
        if output == "readout":
            return [Readout(n_classes, readout, dtype=self.dtype, name="readout")]
        if output == "lif":
            return [LIF(n_classes, readout, dtype=self.dtype, name="lif_out")]
        if output == "linear":
            return []
        raise ValueError(f"output: expected 'readout', 'lif' or 'linear', got {output!r}")


def _finish(layers, b, init, density, dense_first, seed, gain, layer_density):
    net = Network(layers)
    if b.sparse:
        sparse_init(net, density, method=init, seed=seed, gain=gain, dense_first=dense_first,
                    layer_density=layer_density)
    return net


def convnet(input_shape=(1, 28, 28), n_classes=10, channels=(32, 64), density=0.1, sparse=True, init="uniform",
            dense_first=True, pool="avg", output="readout", hidden=None, readout=None, seed=0, gain=1.0,
            dtype=np.float32, fc_hidden=(), layer_density=None):
    """The laptop conv ESL-SNN: ``len(channels)`` blocks (conv3x3-BN-LIF-pool2), then a sparse classifier.

    Defaults (MNIST): 1x28x28 -> 32C3-BN-LIF-AP2 -> 64C3-BN-LIF-AP2 ->
    Linear(64*7*7 -> 10) -> Readout. ``fc_hidden`` inserts fully-connected
    LIF layers before the output (``(256,)``: Linear(3136 -> 256) "fc1" ->
    LIF "lif_fc1" -> Linear(256 -> 10) "fc"). ``dense_first`` keeps the
    first conv dense (288 weights: with 1 input channel a 10% 3x3 kernel
    would have fewer than one weight per output channel); the global density
    stays exactly ``density``.
    """
    hidden = LIFParams() if hidden is None else hidden
    b = _Builder(input_shape, sparse, density, hidden, seed, gain, dtype)
    layers = []
    for i, c in enumerate(channels, 1):
        layers += b.block(int(c), i)
        layers += b.pool(i, pool)
    n = int(np.prod(b.shape))
    layers += [Flatten(n, dtype=dtype)]
    for i, size in enumerate(fc_hidden, 1):
        size = int(size)
        layers += [b.linear(n, size, f"fc{i}"), LIF(size, hidden, dtype=dtype, name=f"lif_fc{i}")]
        n = size
    layers += [b.linear(n, n_classes, "fc")]
    layers += b.head(n_classes, output, readout)
    return _finish(layers, b, init, density, dense_first, seed, gain, layer_density)


def vggsnn(input_shape=(2, 48, 48), n_classes=10, width=1.0, density=0.1, sparse=True, init="erk",
           dense_first=False, output="linear", hidden=None, readout=None, seed=0, gain=1.0, dtype=np.float32,
           layer_density=None):
    """VGGSNN (TET / ESL-SNNs): :data:`VGGSNN_LAYERS` with ``width``-scaled channels, then Linear(C*h*w -> classes).

    DVS-CIFAR10 input: 2 x 48 x 48 (3 x 3 maps left before the classifier);
    CIFAR: 3 x 32 x 32 (2 x 2 left). Sizes must be divisible by 16.
    """
    hidden = LIFParams() if hidden is None else hidden
    b = _Builder(input_shape, sparse, density, hidden, seed, gain, dtype)
    layers, i, p = [], 0, 0
    for spec in VGGSNN_LAYERS:
        if spec == "A":
            p += 1
            layers += b.pool(p)
        else:
            i += 1
            layers += b.block(_scaled(spec, width), i)
    n = int(np.prod(b.shape))
    layers += [Flatten(n, dtype=dtype), b.linear(n, n_classes, "fc")]
    layers += b.head(n_classes, output, readout)
    return _finish(layers, b, init, density, dense_first, seed, gain, layer_density)


def resnet19(input_shape=(3, 32, 32), n_classes=10, width=1.0, density=0.1, sparse=True, init="erk",
             dense_first=False, output="linear", hidden=None, readout=None, seed=0, gain=1.0, dtype=np.float32,
           layer_density=None):
    """ResNet19 (TET): stem 3x3 conv-BN-LIF, :data:`RESNET19_STAGES` of basic blocks, global pool, 2 linear layers."""
    hidden = LIFParams() if hidden is None else hidden
    b = _Builder(input_shape, sparse, density, hidden, seed, gain, dtype)
    layers = b.block(_scaled(64, width), 0)
    for s, (c, n_blocks, stride) in enumerate(RESNET19_STAGES, 1):
        c = _scaled(c, width)
        for k in range(n_blocks):
            st = stride if k == 0 else 1
            shape_in = b.shape
            conv1, b.shape = b.conv(c, stride=st, name="conv1")
            ch, h, w = b.shape
            main = [conv1, b.bn(ch, h, w, "bn1"),
                    LIF(ch * h * w, hidden, dtype=dtype, name="lif1")]
            conv2, _ = b.conv(c, name="conv2")
            main += [conv2, b.bn(ch, h, w, "bn2")]
            shortcut = None
            if st != 1 or shape_in[0] != c:
                down, _ = b.conv(c, kernel=1, stride=st, padding=0, name="down", shape=shape_in)
                shortcut = [down, b.bn(ch, h, w, "down_bn")]
            name = f"layer{s}.{k}"
            layers += [ResidualBlock(main, shortcut, name=name), LIF(ch * h * w, hidden, dtype=dtype, name=f"{name}.lif")]
    c, h, w = b.shape
    layers += [AvgPool2d(c, (h, w), h if h == w else 1, dtype=dtype, name="avgpool")]
    if h != w:
        raise ValueError(f"input_shape: resnet19 needs square feature maps, got {h}x{w}")
    n_hidden = _scaled(256, width)
    layers += [Flatten(c, dtype=dtype), b.linear(c, n_hidden, "fc1"), LIF(n_hidden, hidden, dtype=dtype, name="lif_fc1"),
               b.linear(n_hidden, n_classes, "fc2")]
    layers += b.head(n_classes, output, readout)
    return _finish(layers, b, init, density, dense_first, seed, gain, layer_density)
