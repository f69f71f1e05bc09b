"""The library's Flax modules: encoder / decoder networks, PixelCNN, the VQ codebook, the NVIL
baseline and the flow wrapper.

Everything else in dgmjax is pure functions of arrays and params pytrees and imports no Flax;
these modules hold parameters for the models built from networks (:mod:`dgmjax.models.vae`,
:mod:`~dgmjax.models.pixel_vae`, :mod:`~dgmjax.models.categorical_vae`,
:mod:`~dgmjax.models.vqvae`) and for your own. Nothing here samples, so no module carries RNG
state.

==================================  ==============================================================
:mod:`dgmjax.nn.mlp`                Burda's MLP and Gaussian head (:class:`MLP`,
                                    :class:`GaussianHead`), ``flatten_images``
:mod:`dgmjax.nn.pixelcnn`           masked convolutions, gated PixelCNN, exact likelihood,
                                    sampling, receptive field
:mod:`dgmjax.nn.vq`                 :class:`VectorQuantizer`, a codebook over :mod:`dgmjax.vq`
:mod:`dgmjax.nn.baselines`          :class:`NVILBaseline`, an input-dependent REINFORCE baseline
:mod:`dgmjax.nn.flows`              :class:`FlowModule`, a bijector's params in a Linen module
==================================  ==============================================================
"""

from dgmjax.nn import baselines, flows, mlp, pixelcnn, vq
from dgmjax.nn.baselines import NVILBaseline
from dgmjax.nn.flows import FlowModule
from dgmjax.nn.mlp import MLP, GaussianHead, Initializer, default_kernel_init, flatten_images
from dgmjax.nn.pixelcnn import MaskedConv2D, PixelCNN
from dgmjax.nn.vq import VectorQuantizer

__all__ = [
    "FlowModule", "GaussianHead", "Initializer", "MLP", "MaskedConv2D", "NVILBaseline", "PixelCNN",
    "VectorQuantizer", "baselines", "default_kernel_init", "flatten_images", "flows", "mlp",
    "pixelcnn", "vq",
]
