"""CIFAR-100 zoo (32x32 inputs): the RepDistiller / mdistiller teacher and student networks."""

from kdrun.models.cifar import (  # noqa: F401  (imported for registration)
    mobilenetv2,
    resnet,
    resnet_big,
    shufflenetv1,
    shufflenetv2,
    vgg,
    wrn,
)
