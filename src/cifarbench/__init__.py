"""cifarbench: a reproducible CIFAR-10 benchmark of classic CNNs and their regularization/augmentation ablations."""

__version__ = "0.1.0"
