"""Published CIFAR-10 test accuracies of the benchmark's architectures, shown beside the `full` preset's
measurements (the literature recipe at width 1), so a GPU run shows at a glance whether it reproduces.

Only numbers with a source for this recipe are listed; an architecture without one (LeNet-5, AlexNet,
GoogLeNet and the row LSTM have no canonical CIFAR-10 number under it) shows "no published number".
"""

from __future__ import annotations

# arch -> (test accuracy %, source). kuangliu/pytorch-cifar trains its models with SGD 0.1, momentum 0.9,
# weight decay 5e-4, cosine schedule, crop+flip: the recipe this project's `full` preset follows.
PUBLISHED: dict[str, tuple[float, str]] = {
    "resnet18": (93.02, "kuangliu/pytorch-cifar README (ResNet18)"),
    "densenet121": (95.04, "kuangliu/pytorch-cifar README (DenseNet121)"),
    "vgg11": (92.64, "kuangliu/pytorch-cifar README: VGG16 (no VGG11 row; VGG11 is shallower, expect lower)"),
}
