"""A fixed zoo of real networks to validate the execution-time model on.

Every network is built with Keras (random weights, ``weights=None``), converted to a float32
.tflite with ``tf.lite.TFLiteConverter`` at default settings, and cached on disk under
``FDIOT_HOME/zoo`` keyed by name and TensorFlow version. None of them is used in fitting: the time
model is fitted on single-op samples only, so every family is a holdout family.

The set is fixed on purpose (chosen before any accuracy was measured) and sized so that each
network runs in roughly 2-150 ms on one core of a lab host. TensorFlow is imported lazily, only
when a network has to be built.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fdiot.settings import get_settings

# The flatbuffer file identifier of a .tflite file: bytes 4-8, after the 4-byte root offset.
TFLITE_MAGIC = b"TFL3"

FAMILIES = ("mobile_cnn", "plain_cnn", "residual", "sensor_conv1d", "rnn", "mlp", "pruned")
# Families kept out of fitting and used for validation: all of them (the fit sees op samples only).
HOLDOUT_FAMILIES = frozenset(FAMILIES)

# Bump when a builder's code changes (parameter changes are caught by definition_key).
ZOO_VERSION = 1
# Fixed seed so that the zoo's weights (and hence the .tflite bytes) are reproducible.
_SEED = 0


@dataclass(frozen=True)
class NetworkSpec:
    """One zoo network: its family and a function that returns a fresh Keras model."""

    family: str
    build_fn: Callable[[], Any]
    description: str = ""

    @property
    def holdout(self) -> bool:
        return self.family in HOLDOUT_FAMILIES


# ---------------------------------------------------------------------------------------------
# Builders. Each imports keras lazily so that importing this module stays cheap.


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def _input(k: Any, shape: tuple[int, ...]) -> Any:
    """A batch-1 input: edge inference runs batch 1, and a static batch lets the converter lower
    Keras 3 LSTM/GRU loops to TFLite builtins (a dynamic batch leaves TensorList ops behind)."""
    return k.Input(shape, batch_size=1)


def _mobilenet(alpha: float, size: int) -> Callable[[], Any]:
    def build() -> Any:
        k = _keras()
        return k.applications.MobileNet(
            input_tensor=_input(k, (size, size, 3)), alpha=alpha, weights=None, classes=1000
        )

    return build


def _mobilenet_v2(alpha: float, size: int) -> Callable[[], Any]:
    def build() -> Any:
        k = _keras()
        return k.applications.MobileNetV2(
            input_tensor=_input(k, (size, size, 3)), alpha=alpha, weights=None, classes=1000
        )

    return build


def _mobilenet_v3(large: bool, size: int) -> Callable[[], Any]:
    def build() -> Any:
        k = _keras()
        cls = k.applications.MobileNetV3Large if large else k.applications.MobileNetV3Small
        # include_preprocessing=False: the Rescaling layer is not part of the network proper.
        return cls(
            input_tensor=_input(k, (size, size, 3)),
            weights=None,
            classes=1000,
            include_preprocessing=False,
        )

    return build


def _efficientnet_b0(size: int) -> Callable[[], Any]:
    def build() -> Any:
        k = _keras()
        return k.applications.EfficientNetB0(
            input_tensor=_input(k, (size, size, 3)), weights=None, classes=1000
        )

    return build


def _vgg(size: int, widths: tuple[int, ...], dense: int, classes: int = 10) -> Callable[[], Any]:
    """VGG-like: per stage two 3x3 conv+ReLU then 2x2 max-pool; then flatten, dense, classifier."""

    def build() -> Any:
        k = _keras()
        layers = k.layers
        x = inp = _input(k, (size, size, 3))
        for width in widths:
            x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
            x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(dense, activation="relu")(x)
        x = layers.Dense(classes, activation="softmax")(x)
        return k.Model(inp, x)

    return build


def _resnet(
    size: int, stem: int, widths: tuple[int, ...], blocks: int, classes: int = 10
) -> Callable[[], Any]:
    """ResNet-style (basic blocks, BN folded by the converter, 1x1 projection on shape change)."""

    def build() -> Any:
        k = _keras()
        layers = k.layers
        x = inp = _input(k, (size, size, 3))
        x = layers.Conv2D(stem, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        channels = stem
        for stage, width in enumerate(widths):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                shortcut = x
                y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
                y = layers.BatchNormalization()(y)
                y = layers.ReLU()(y)
                y = layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
                y = layers.BatchNormalization()(y)
                if stride != 1 or channels != width:
                    shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False)(x)
                    shortcut = layers.BatchNormalization()(shortcut)
                x = layers.ReLU()(layers.Add()([y, shortcut]))
                channels = width
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(classes, activation="softmax")(x)
        return k.Model(inp, x)

    return build


def _mobilenet_like(size: int, widths: tuple[tuple[int, int], ...]) -> Callable[[], Any]:
    """MobileNetV1-style stack of (depthwise 3x3, pointwise 1x1) blocks, given (width, stride)."""

    def build() -> Any:
        k = _keras()
        layers = k.layers
        x = inp = _input(k, (size, size, 3))
        x = layers.Conv2D(widths[0][0], 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
        for width, stride in widths[1:]:
            x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
            x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
            x = layers.Conv2D(width, 1, use_bias=False)(x)
            x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(100, activation="softmax")(x)
        return k.Model(inp, x)

    return build


def _conv1d(
    steps: int, features: int, widths: tuple[int, ...], kernel: int, classes: int = 6
) -> Callable[[], Any]:
    """1-D sensor convnet (HAR-style): Conv1D+ReLU stack with max-pool every layer, then dense."""

    def build() -> Any:
        k = _keras()
        layers = k.layers
        x = inp = _input(k, (steps, features))
        for width in widths:
            x = layers.Conv1D(width, kernel, padding="same", activation="relu")(x)
            x = layers.MaxPooling1D(2)(x)
        x = layers.GlobalAveragePooling1D()(x)
        x = layers.Dense(64, activation="relu")(x)
        x = layers.Dense(classes, activation="softmax")(x)
        return k.Model(inp, x)

    return build


def _deepsense_like(
    steps: int, sensors: int, axes: int, conv: int, units: int, classes: int = 6
) -> Callable[[], Any]:
    """DeepSense-like: per-interval conv over (time x sensor-axes) then a GRU over intervals."""

    def build() -> Any:
        k = _keras()
        layers = k.layers
        x = inp = _input(k, (steps, sensors * axes, 1))
        x = layers.Conv2D(conv, (3, axes), strides=(1, axes), padding="same", activation="relu")(x)
        x = layers.Conv2D(conv, (3, 3), padding="same", activation="relu")(x)
        x = layers.Conv2D(conv, (3, 3), padding="same", activation="relu")(x)
        x = layers.Reshape((steps, -1))(x)
        x = layers.GRU(units)(x)
        x = layers.Dense(classes, activation="softmax")(x)
        return k.Model(inp, x)

    return build


def _rnn(
    kind: str, steps: int, features: int, units: tuple[int, ...], classes: int = 6
) -> Callable[[], Any]:
    """Stacked LSTM/GRU sensing model: every layer but the last returns sequences."""

    def build() -> Any:
        k = _keras()
        layers = k.layers
        cell = layers.LSTM if kind == "lstm" else layers.GRU
        x = inp = _input(k, (steps, features))
        for i, n in enumerate(units):
            x = cell(n, return_sequences=i < len(units) - 1)(x)
        x = layers.Dense(classes, activation="softmax")(x)
        return k.Model(inp, x)

    return build


def _mlp(inputs: int, widths: tuple[int, ...], classes: int) -> Callable[[], Any]:
    def build() -> Any:
        k = _keras()
        layers = k.layers
        x = inp = _input(k, (inputs,))
        for width in widths:
            x = layers.Dense(width, activation="relu")(x)
        x = layers.Dense(classes, activation="softmax")(x)
        return k.Model(inp, x)

    return build


# ---------------------------------------------------------------------------------------------
# The zoo. Fixed: do not tune this list to the results.

NETWORKS: dict[str, NetworkSpec] = {
    # Mobile CNNs from keras.applications (ImageNet head, 1000 classes).
    "mobilenet_a050_128": NetworkSpec("mobile_cnn", _mobilenet(0.5, 128), "MobileNet a=0.5 128px"),
    "mobilenet_a075_160": NetworkSpec(
        "mobile_cnn", _mobilenet(0.75, 160), "MobileNet a=0.75 160px"
    ),
    "mobilenetv2_a100_96": NetworkSpec("mobile_cnn", _mobilenet_v2(1.0, 96), "MobileNetV2 96px"),
    "mobilenetv2_a100_128": NetworkSpec("mobile_cnn", _mobilenet_v2(1.0, 128), "MobileNetV2 128px"),
    "mobilenetv2_a075_160": NetworkSpec(
        "mobile_cnn", _mobilenet_v2(0.75, 160), "MobileNetV2 a=0.75 160px"
    ),
    "mobilenetv3small_128": NetworkSpec(
        "mobile_cnn", _mobilenet_v3(False, 128), "MobileNetV3Small 128px (hard-swish, SE)"
    ),
    "mobilenetv3large_128": NetworkSpec(
        "mobile_cnn", _mobilenet_v3(True, 128), "MobileNetV3Large 128px (hard-swish, SE)"
    ),
    "efficientnetb0_128": NetworkSpec(
        "mobile_cnn", _efficientnet_b0(128), "EfficientNetB0 128px (swish, SE)"
    ),
    # Plain VGG-like CNNs of several widths.
    "vgg_w16_64": NetworkSpec("plain_cnn", _vgg(64, (16, 32, 64), 128), "VGG-like 64px 16-32-64"),
    "vgg_w32_64": NetworkSpec(
        "plain_cnn", _vgg(64, (32, 64, 128, 128), 256), "VGG-like 64px 32-64-128-128"
    ),
    "vgg_w24_96": NetworkSpec("plain_cnn", _vgg(96, (24, 48, 96), 256), "VGG-like 96px 24-48-96"),
    # Residual nets built by hand.
    "resnet20_32": NetworkSpec("residual", _resnet(32, 16, (16, 32, 64), 3), "ResNet-20 CIFAR"),
    "resnet14_w32_64": NetworkSpec(
        "residual", _resnet(64, 32, (32, 64, 128), 2), "ResNet-14 64px 32-64-128"
    ),
    "resnet10_w64_96": NetworkSpec(
        "residual", _resnet(96, 32, (64, 128, 256), 1), "ResNet-10 96px 64-128-256"
    ),
    # 1-D sensor convnets on accelerometer/gyro windows.
    "har_conv1d_512x9": NetworkSpec(
        "sensor_conv1d", _conv1d(512, 9, (64, 128, 128, 256), 5), "HAR Conv1D 512x9 k5"
    ),
    "har_conv1d_1024x6": NetworkSpec(
        "sensor_conv1d", _conv1d(1024, 6, (32, 64, 128, 256), 7), "Conv1D 1024x6 k7"
    ),
    "deepsense_like": NetworkSpec(
        "sensor_conv1d", _deepsense_like(128, 3, 3, 64, 128), "DeepSense-like conv + GRU"
    ),
    # LSTM/GRU sensing models.
    "lstm_64x2_seq128": NetworkSpec("rnn", _rnn("lstm", 128, 9, (64, 64)), "2x LSTM 64, 128x9"),
    "gru_256_seq128": NetworkSpec("rnn", _rnn("gru", 128, 32, (256,)), "GRU 256, 128x32"),
    "lstm_256_seq64": NetworkSpec("rnn", _rnn("lstm", 64, 16, (256,)), "LSTM 256, 64x16"),
    "gru_32x3_seq100": NetworkSpec("rnn", _rnn("gru", 100, 6, (32, 32, 32)), "3x GRU 32, 100x6"),
    # MLPs.
    "mlp_3072_2048_1024x2": NetworkSpec(
        "mlp", _mlp(3072, (2048, 1024, 1024), 100), "MLP 3072-2048-1024-1024-100"
    ),
    "mlp_1024_2048x2": NetworkSpec(
        "mlp", _mlp(1024, (2048, 2048), 1000), "MLP 1024-2048-2048-1000"
    ),
    # Pruned-looking variants with odd widths.
    "vgg_pruned_64": NetworkSpec(
        "pruned", _vgg(64, (37, 61, 117), 93), "VGG-like 64px pruned 37-61-117"
    ),
    "resnet_pruned_64": NetworkSpec(
        "pruned", _resnet(64, 29, (29, 61, 93), 2), "ResNet-14 64px pruned 29-61-93"
    ),
    "mobilenet_pruned_128": NetworkSpec(
        "pruned",
        _mobilenet_like(
            128,
            ((21, 2), (37, 1), (61, 2), (67, 1), (117, 2), (123, 1), (229, 2))
            + ((237, 1),) * 3
            + ((461, 2), (477, 1)),
        ),
        "MobileNetV1-like 128px pruned widths",
    ),
    "lstm_pruned_93": NetworkSpec("pruned", _rnn("lstm", 128, 9, (93, 37)), "LSTM 93+37, 128x9"),
}


# ---------------------------------------------------------------------------------------------
# Conversion and cache.


def cache_dir() -> Path:
    """Where converted zoo networks are kept: ``FDIOT_HOME/zoo`` (gitignored with FDIOT_HOME)."""
    return get_settings().home / "zoo"


def _tf_version() -> str:
    """The installed TensorFlow's version, read from package metadata (no TensorFlow import)."""
    from importlib import metadata

    for distribution in ("tensorflow", "tensorflow-cpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(distribution)
    import tensorflow as tf

    return str(tf.__version__)


def definition_key(name: str) -> str:
    """A short hash of a network's definition: its builder and the builder's parameters, so that
    changing a network's widths or sizes never serves a stale cached file."""
    build_fn = NETWORKS[name].build_fn
    cells = tuple(cell.cell_contents for cell in build_fn.__closure__ or ())
    text = f"{ZOO_VERSION}:{build_fn.__qualname__}:{cells!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cache_path(name: str, tf_version: str) -> Path:
    return cache_dir() / f"{name}-{definition_key(name)}-tf{tf_version}.tflite"


def convert(model: Any) -> bytes:
    """Convert a Keras model to float32 .tflite bytes with the converter's default settings."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # Keras prints the exported SavedModel's whole signature on stdout: keep the tables readable.
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer: bytes = converter.convert()
    return flatbuffer


def build_tflite(name: str, *, use_cache: bool = True) -> bytes:
    """Return the .tflite bytes of zoo network ``name``, building and caching them on first use."""
    spec = NETWORKS[name]
    path = cache_path(name, _tf_version())
    if use_cache and path.exists():
        return path.read_bytes()
    keras = _keras()
    keras.utils.set_random_seed(_SEED)
    flatbuffer = convert(spec.build_fn())
    keras.backend.clear_session()
    if flatbuffer[4:8] != TFLITE_MAGIC:
        raise ValueError(f"converter returned no TFLite flatbuffer for {name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename so that a killed build never leaves a truncated file in the cache.
    partial = path.with_suffix(".partial")
    partial.write_bytes(flatbuffer)
    partial.replace(path)
    return flatbuffer


def sha256(flatbuffer: bytes) -> str:
    return hashlib.sha256(flatbuffer).hexdigest()


def main(argv: list[str] | None = None) -> None:
    """Build zoo networks and print size and op types: ``python -m bench.zoo [--measure] [names]``.

    ``--measure`` also times each network with :mod:`agent.runner` (LiteRT, XNNPACK, 1 thread,
    pinned core, the farm's measurement protocol).
    """
    import argparse
    from collections import Counter

    from models.features import parse_tflite

    parser = argparse.ArgumentParser(prog="python -m bench.zoo")
    parser.add_argument("names", nargs="*", help="networks (default: all)")
    parser.add_argument("--measure", action="store_true", help="time each network on this CPU")
    args = parser.parse_args(argv)
    names = args.names or list(NETWORKS)
    child = None
    if args.measure:
        from agent.runner import MeasurementChild

        child = MeasurementChild()
    try:
        for name in names:
            flatbuffer = build_tflite(name)
            ops = Counter(op.op_type for op in parse_tflite(flatbuffer))
            latency = ""
            if child is not None:
                stats = child.measure(flatbuffer)
                latency = (
                    f"{stats.median_ms:9.2f} ms (p10 {stats.p10_ms:.2f}, p90 {stats.p90_ms:.2f})"
                )
            size_mb = len(flatbuffer) / 1e6
            print(f"{name:24s} {NETWORKS[name].family:14s} {size_mb:7.2f} MB {latency}", flush=True)
            print("    ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())), flush=True)
    finally:
        if child is not None:
            child.close()


if __name__ == "__main__":
    main()
