"""The model zoo: every architecture of the seed course, adapted to 32x32 CIFAR-10 images.

`build_model(name, ...)` picks one by name (`list_models()`); each family lives in its own module,
which registers its variants when imported below.
"""

from cifarbench.models import alexnet, densenet, googlenet, lenet, mlp, recurrent, resnet, vgg  # noqa: F401 (register)
from cifarbench.models.registry import ModelConfig, ModelInfo, build_model, build_model_from, list_models, model_info

__all__ = ["ModelConfig", "ModelInfo", "build_model", "build_model_from", "list_models", "model_info"]
