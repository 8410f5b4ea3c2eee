"""Reference CNNs used by the examples and benchmarks."""

import keras


def vgg_style_cnn(input_shape=(28, 28, 1), classes=10, widths=(32, 32, 64, 64, 128, 128),
                  name="vgg_style_cnn"):
    """A VGG-style CNN: pairs of 3x3 conv-BN-ReLU, max-pooling between pairs.

    Args:
        input_shape: image shape ``(height, width, channels)``.
        classes: number of output logits.
        widths: channels of the 3x3 convs; a 2x2 max-pool follows every
            second conv.
        name: model name.

    Returns:
        A Functional `keras.Model` producing logits.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for index, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"conv{index + 1}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{index + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{index + 1}")(x)
        if index % 2 == 1:
            x = keras.layers.MaxPooling2D(name=f"pool{index // 2 + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _basic_block(x, width, stride, name):
    shortcut = x
    y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != width:
        shortcut = keras.layers.Conv2D(width, 1, strides=stride, use_bias=False,
                                       name=f"{name}_shortcut")(shortcut)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet18(input_shape=(224, 224, 3), classes=1000, name="resnet18"):
    """ResNet-18 (basic blocks, 64-128-256-512), for speed measurements.

    Args:
        input_shape: image shape.
        classes: number of output logits.
        name: model name.

    Returns:
        A Functional `keras.Model`.
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width, stride, name=f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
