"""Model zoos behind a registry: `create("resnet8x4", num_classes=100)`, `available("cifar100")`.

The CIFAR-100 zoo (RepDistiller / mdistiller architectures) and the ImageNet zoo (torchvision
ResNets, mdistiller's MobileNetV1) are imported by `create`, not by importing this package
(torch); their names are known without them (kdrun.models.registry.NAMES).
"""

from kdrun.models.registry import ZOOS, available, create, register, zoo_of

__all__ = ["ZOOS", "available", "create", "register", "zoo_of"]
