"""ImageNet zoo (224x224 inputs): torchvision ResNets and mdistiller's MobileNetV1."""

from kdrun.models.imagenet import mobilenetv1, resnet  # noqa: F401  (imported for registration)
