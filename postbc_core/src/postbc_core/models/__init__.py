"""Neural network modules: batched ensemble heads, diffusion noise nets (MLP, 1-D U-Net), image encoders."""

from postbc_core.models.conv_encoder import ConvKeypointEncoder, SpatialSoftmax
from postbc_core.models.ensemble import (
    BatchedLinear,
    BatchedMLP,
    EnsembleOutput,
    EnsembleRegressor,
    gaussian_nll,
)
from postbc_core.models.noise_nets import ConditionalUnet1D, MLPNoiseNet, SinusoidalPosEmb
from postbc_core.models.obs_encoder import ObsEncoder
from postbc_core.models.resnet import ResNet, load_torchvision_weights, resnet18

__all__ = [
    "BatchedLinear", "BatchedMLP", "ConditionalUnet1D", "ConvKeypointEncoder", "EnsembleOutput", "EnsembleRegressor",
    "MLPNoiseNet", "ObsEncoder", "ResNet", "SinusoidalPosEmb", "SpatialSoftmax", "gaussian_nll",
    "load_torchvision_weights", "resnet18",
]
