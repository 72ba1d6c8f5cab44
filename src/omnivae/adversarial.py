"""Optional adversarial sharpening for image decoders: a small PatchGAN discriminator and hinge
losses (Isola et al. 2017; Lim & Ye 2017). Training uses them through
omnivae.train.adversarial.AdversarialModule (train.adversarial_weight > 0), which adds
`adversarial_weight * generator_hinge(D(fake))` to the objective and steps D with its own
optimiser (see docs/priors.md)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnivae.errors import InputError


class PatchDiscriminator(nn.Module):
    """Images [B,C,H,W] in [0,1] -> real/fake logits [B,1,h,w], one per overlapping patch."""

    def __init__(self, in_channels: int = 3, channels: list[int] | tuple[int, ...] = (32, 64), spectral: bool = True):
        super().__init__()
        if in_channels < 1 or not channels:
            raise InputError(f"PatchDiscriminator needs in_channels >= 1 and some channels, got {in_channels}, {channels}")
        norm = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
        layers, c = [], in_channels
        for c_out in channels:  # stride 2: each logit sees a patch, not the whole image
            layers += [norm(nn.Conv2d(c, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(norm(nn.Conv2d(c, 1, 3, 1, 1)))
        self.net, self.in_channels = nn.Sequential(*layers), in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"discriminator expects images [batch, {self.in_channels}, H, W], got {list(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return self.net(x * 2.0 - 1.0)


def _mean(x: torch.Tensor) -> torch.Tensor:
    """Mean that is 0 for an empty tensor (a batch in which no example has the image)."""
    return x.sum() / max(1, x.numel())


def discriminator_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss: mean relu(1 - D(real)) + mean relu(1 + D(fake)); a term over no logits is 0."""
    return _mean(F.relu(1.0 - real_logits)) + _mean(F.relu(1.0 + fake_logits))


def generator_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial term: -mean D(fake)."""
    return -fake_logits.mean()


def decoded_images(model, name: str, z: torch.Tensor) -> torch.Tensor:
    """Differentiable mean images [N,C,H,W] in [0,1] of image modality `name` from codes z [N,D]
    (model.decode runs without gradients, so the generator term needs this)."""
    mod = model.modalities[name]
    if not mod.adversarial:
        raise InputError(f"adversarial term: modality {name!r} is {mod.kind!r}, not an image")
    return mod.decoded_mean(z)


def adversarial_codes(model, mu: torch.Tensor, logvar: torch.Tensor, present: torch.Tensor,
                      name: str) -> torch.Tensor:
    """Decoder inputs [2B, W] for image modality `name`: one draw from each example's joint
    posterior (a reconstruction where the image is present, a cross-modal generation from the
    other modalities where it is missing), then B codes from N(0, I), each completed by the
    model with whatever else the decoder reads (model.decoder_codes: mmvae_plus's private code,
    cvae's condition embedding). InputError if the model rules the term out for `name`."""
    problem = model.adversarial_problem(name)
    if problem is not None:
        raise InputError(f"adversarial term on {name!r}: {problem}")
    z_post = model.draw(mu, logvar, present, 1)[0]
    z_prior = torch.randn_like(z_post)
    return torch.cat([model.decoder_codes(name, z_post, mu, logvar, present),
                      model.decoder_codes(name, z_prior, mu, logvar, present, from_prior=True)])


def adversarial_images(model, batch, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(fake, real) images in [0,1] for one training batch: fakes [2B,C,H,W] are decoded, with
    gradients, from posterior draws of the batch and from as many prior codes
    (adversarial_codes); reals are the present images [n_present,C,H,W]."""
    if name not in batch.data:
        raise InputError(f"adversarial term: the batch has no modality {name!r}")
    mu, logvar, present = model.encode_unimodal(batch)
    fake = decoded_images(model, name, adversarial_codes(model, mu, logvar, present, name))
    real = model.modalities[name].features(batch.data[name])[batch.present(name)]
    return fake, real
