"""Model zoos behind a registry: `create("resnet8x4", num_classes=100)`, `available("cifar100")`.

Importing this package registers the CIFAR-100 zoo (RepDistiller / mdistiller architectures)
and the ImageNet zoo (torchvision ResNets, mdistiller's MobileNetV1).
"""

from kdrun.models import cifar, imagenet  # noqa: F401  (registers the zoos)
from kdrun.models.registry import ZOOS, available, create, register, zoo_of

__all__ = ["ZOOS", "available", "create", "register", "zoo_of"]
