"""Published CIFAR-10 test accuracies, shown beside the `full` preset's measurements (width 1, all training
images), so a GPU run shows whether it lands near the literature.

Like with like only: a number is listed for an architecture of this package only where its source trained
the same architecture at the same depth (vgg11 is not VGG-16, resnet18 is not the paper's ResNet-20..110,
densenet121 is not DenseNet-BC-100). An architecture without one shows "no published number": nothing is
better than an unlike number. Each source says how it trained, since no recipe below is the `full` preset's
(cosine schedule, 200 epochs, 45,000 training images, the last checkpoint scored once).
"""

from __future__ import annotations

# kuangliu/pytorch-cifar's README table: 350 epochs, lr 0.1 / 0.01 / 0.001 set by hand at epochs 150 and 250,
# weight decay 5e-4 on every parameter (batch norm and biases too), and its main.py keeps the checkpoint
# with the best test accuracy seen during training: an upper estimate of a last-checkpoint number.
_KUANGLIU = ("kuangliu/pytorch-cifar README ({model}): 350-epoch step schedule, weight decay on batch norm and "
             "biases too, best test-set checkpoint kept")
# He et al. 2016, Table 6 (CIFAR-10 with crop+flip): SGD 0.1, weight decay 1e-4, 64k iterations of 128
# (~164 epochs), lr / 10 at 32k and 48k, trained on all 50,000 training images; error = 100 - accuracy.
_HE = "He et al. 2016, Table 6 ({model}, crop+flip, ~164-epoch step schedule, weight decay 1e-4{extra})"
# Huang et al. 2017, Table 2, C10+ (crop+flip): 300 epochs, batch 64, lr 0.1 / 10 at 50 % and 75 %, weight
# decay 1e-4, Nesterov momentum 0.9, no dropout with augmentation.
_HUANG = "Huang et al. 2017, Table 2 (DenseNet-BC, L=100, k=12, C10+: 300-epoch step schedule, batch 64)"

# arch (a registered model name) -> (test accuracy %, source and how it was trained)
PUBLISHED: dict[str, tuple[float, str]] = {
    "vgg16": (92.64, _KUANGLIU.format(model="VGG16")),
    "resnet18": (93.02, _KUANGLIU.format(model="ResNet18")),
    "resnet50": (93.62, _KUANGLIU.format(model="ResNet50")),
    "densenet121": (95.04, _KUANGLIU.format(model="DenseNet121")),
    "resnet20": (91.25, _HE.format(model="ResNet-20", extra="")),
    "resnet32": (92.49, _HE.format(model="ResNet-32", extra="")),
    "resnet44": (92.83, _HE.format(model="ResNet-44", extra="")),
    "resnet56": (93.03, _HE.format(model="ResNet-56", extra="")),
    "resnet110": (93.57, _HE.format(model="ResNet-110", extra="; best of 5 runs, mean 93.39")),
    "densenet_bc100": (95.49, _HUANG),
}
