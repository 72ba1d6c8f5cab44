"""M2 semi-supervised VAE (Kingma, Rezende, Mohamed & Welling 2014, "Semi-supervised learning
with deep generative models"): one modality x and a class label y (a categorical modality,
named by `label`) that is missing for unlabelled examples.

Generative model p(y) p(z) p(x|y,z), p(y) uniform over K classes, p(z) = N(0, I); inference
q(z|x,y) and a classifier q(y|x). With
    L(x,y) = E_q(z|x,y)[log p(x|y,z)] - beta * KL(q(z|x,y) || N(0, I)) + log p(y)
the loss of an example with x present is
    labelled:    -L(x,y) + (alpha-weighted cross-entropy below)
    unlabelled:  -U(x) = -[sum_y q(y|x) L(x,y) + H(q(y|x))]
loss = mean over the examples with x of those terms + alpha * mean over the labelled ones of
-log q(y|x). The paper's objective is a sum over the N examples of the data plus
alpha_paper * E_labelled[-log q(y|x)] with alpha_paper = 0.1 N; divided by N (a per-example
mean, as here) that is alpha = 0.1, the default. Examples without x add nothing. L(x,y) is
computed for all K classes at once (q(z|x,y) and the decoder run on [K,B] codes), so the
unlabelled sum is one batched operation; a labelled example uses its own class's row.

Networks: x's encoder gives features (its mu, logvar); q(z|x,y) is an MLP (`hidden`) over
those features and one_hot(y); the decoder of x reads [z, one_hot(y)] (x's modality is built
with code size latent_dim + K). q(y|x) is a network of x's encoder architecture with
`classifier_features` outputs, a ReLU and a linear layer to K logits. The label modality's own
encoder and decoder are not used (y enters as a one-hot vector; p(y) is fixed).

Per-modality parameters (`encode_unimodal`, [M,B,W]): x's row is its encoder output; the label's
row holds, in its first K coordinates, what is known of y: one_hot(y) where the label is given,
else q(y|x) where x is, else uniform. From them:
- `fuse`: q(z | given) = sum_y q(y|.) q(z|x,y) as one Gaussian (moment-matched; exact when the
  label is given); N(0, I) where x is missing (z and y are independent in M2). `encode` gives
  its mean; `encode(sample=True)` draws y ~ q(y|.), then z ~ q(z|x,y) (`draw`).
- full codes [z, one_hot(y)] (size latent_dim + K) are what the decoders read: `decode` takes
  them (the label decoded from a code is its class part's argmax); `full_code` is
  [mean of q(z|x,y_hat), one_hot(y_hat)], y_hat the given label or argmax q(y|x).
- `generate`: label -> image draws z ~ N(0, I) (z = 0 with mean=True) and decodes p(x|y,z);
  image -> label draws y ~ q(y|x) (argmax with mean=True); given both, the label is kept and z
  comes from q(z|x,y). `classify(batch)` returns q(y|x) itself.
- `sample`: y ~ p(y), z ~ the prior, both decoded. `reconstruct`: the full code decoded, so the
  label comes back as given (or as q(y|x)'s argmax where missing).
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from omnivae.batch import Batch, LossOutput
from omnivae.config import NonNegativeFloat, PositiveInt
from omnivae.distributions import LOGVAR_MIN, Gaussian, clamp_logvar, masked_mean
from omnivae.errors import InputError
from omnivae.modalities.base import full_precision, mlp
from omnivae.models.base import ModelConfig, MultimodalModel, check_count
from omnivae.models.jmvae import feature_network
from omnivae.models.registry import register_model


def is_label_kind(kind: Any) -> bool:
    """Whether a modality kind holds class labels: its spec counts classes (`num_classes`), as
    the label of M2 must (q(y | x) is a softmax over them)."""
    from omnivae.modalities import MODALITY_KINDS

    return isinstance(kind, str) and kind in MODALITY_KINDS and "num_classes" in MODALITY_KINDS[kind].spec_class.model_fields


class M2Config(ModelConfig):
    model: Literal["m2"] = "m2"
    label: str | None = None  # the categorical label modality; default: the only categorical one
    alpha: NonNegativeFloat = 0.1  # weight of the labelled examples' mean cross-entropy (the paper's alpha / N)
    hidden: list[PositiveInt] = [256]  # hidden widths of the q(z | x, y) MLP
    classifier_features: PositiveInt = 256  # outputs of q(y|x)'s network of x's encoder architecture (even)

    @model_validator(mode="before")
    @classmethod
    def _fill_label(cls, data: Any) -> Any:
        """Write the default out, so a saved config names its label."""
        if not isinstance(data, dict) or data.get("label") is not None or not isinstance(data.get("modalities"), dict):
            return data
        found = [n for n, s in data["modalities"].items() if is_label_kind(
                 s.get("kind") if isinstance(s, dict) else getattr(s, "kind", None))]
        return {**data, "label": found[0]} if len(found) == 1 else data

    @model_validator(mode="after")
    def _check_roles(self) -> "M2Config":
        names = list(self.modalities)
        if len(names) != 2:
            raise ValueError(f"m2 takes exactly two modalities, the data x and its label; got {names}")
        if self.label is None:
            raise ValueError(f"label must name the categorical label modality (of {names}); none or several "
                             "are categorical")
        if self.label not in names:
            raise ValueError(f"label {self.label!r} is not a modality of this model; it has {names}")
        if not is_label_kind(self.modalities[self.label].kind):
            raise ValueError(f"label {self.label!r} must be a categorical modality, "
                             f"it is {self.modalities[self.label].kind!r}")
        if self.classifier_features % 2:
            raise ValueError(f"classifier_features must be even (the network is an encoder of x's kind, which "
                             f"outputs 2 * its latent size), got {self.classifier_features}")
        return self


class M2(MultimodalModel):
    about = "semi-supervised VAE (labels where known, inferred where missing)"
    paper = "Kingma et al. 2014, Semi-supervised learning with deep generative models (M2)"
    config_class = M2Config
    encodes_modalities_apart = False  # encode_unimodal reads several modalities per row (see base)
    supports_conditional_prior = False  # codes are decoded with a class

    def __init__(self, config, modalities=None):
        super().__init__(config, modalities)
        k, width = self.num_classes, self.modality_latent_dim(config)
        self.x_name = next(n for n in self.names if n != config.label)
        self.x_index, self.label_index = self.names.index(self.x_name), self.names.index(config.label)
        self.posterior_net = mlp([2 * width + k, *config.hidden, 2 * config.latent_dim])
        self.classifier = nn.Sequential(feature_network(self.modalities[self.x_name], config.classifier_features),
                                        nn.ReLU(), nn.Linear(config.classifier_features, k))

    @classmethod
    def modality_latent_dim(cls, config: M2Config) -> int:
        return config.latent_dim + config.modalities[config.label].num_classes

    @property
    def num_classes(self) -> int:
        return self.config.modalities[self.config.label].num_classes

    def adversarial_problem(self, name: str) -> str | None:
        return "m2's decoder reads a class with each code; the adversarial term does not draw one"

    # -- the networks --------------------------------------------------------------------------
    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """q(y|x) as logits [B,K] from x (model space)."""
        return full_precision(self.classifier(self.modalities[self.x_name].features(x)))

    def class_posteriors(self, features: torch.Tensor) -> Gaussian:
        """q(z|x,y) [K,B,D] for every class y, from x's encoder features [B,2W]."""
        k, b = self.num_classes, len(features)
        onehot = torch.eye(k, dtype=features.dtype, device=features.device).unsqueeze(1).expand(k, b, k)
        h = torch.cat([features.expand(k, -1, -1), onehot], -1)
        mu, logvar = full_precision(self.posterior_net(h)).chunk(2, -1)
        return Gaussian(mu, clamp_logvar(logvar))

    def with_class(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Full codes [..., D+K]: z [..., D] and one_hot(y) of classes y [...]."""
        return torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], -1)

    # -- the objective -----------------------------------------------------------------------------
    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        x, label, k = self.x_name, self.config.label, self.num_classes
        if x not in batch.data:
            raise InputError(f"m2's loss needs its data modality {x!r} in the batch; it holds {list(batch.data)}")
        q_x = self.modalities[x].encode(batch.data[x])
        q = self.class_posteriors(torch.cat([q_x.mu, q_x.logvar], -1))  # [K,B,D]
        onehots = torch.eye(k, dtype=q.mu.dtype, device=q.mu.device).unsqueeze(1).expand(-1, len(q_x.mu), -1)
        rec = self.log_likelihoods(torch.cat([q.rsample(), onehots], -1), batch, [x])[x]  # [K,B]
        kl = q.kl_standard()  # [K,B]
        bound = rec - self.config.beta * beta_scale * kl - math.log(k)  # L(x, y) for every y
        log_pi = F.log_softmax(self.class_logits(batch.data[x]), -1)  # [B,K]
        have_x = batch.present(x)
        labelled = have_x & batch.present(label) if label in batch.data else torch.zeros_like(have_x)
        y = batch.data[label].masked_fill(~labelled, 0) if label in batch.data else torch.zeros_like(have_x).long()
        target = F.one_hot(y, k).to(log_pi.dtype)
        weights = torch.where(labelled.unsqueeze(-1), target, log_pi.exp())  # [B,K]: the class(es) L is taken at
        entropy = -(log_pi.exp() * log_pi).sum(-1)
        per_example = -((weights.T * bound).sum(0) + entropy.masked_fill(labelled, 0.0))
        ce = -(target * log_pi).sum(-1)
        ce_mean = masked_mean(ce, labelled)
        total = masked_mean(per_example, have_x) + self.config.alpha * ce_mean
        unlabelled = have_x & ~labelled
        terms = {"loss": total, "rec": masked_mean((weights.T * rec).sum(0), have_x),
                 "kl": masked_mean((weights.T * kl).sum(0), have_x), "ce": ce_mean,
                 "entropy": masked_mean(entropy, unlabelled),
                 "accuracy": masked_mean((log_pi.argmax(-1) == y).to(ce.dtype), labelled),
                 "labelled": masked_mean(labelled.to(ce.dtype), have_x)}
        return LossOutput(total, {n: v.detach() for n, v in terms.items()})

    # -- per-modality parameters and the posterior ----------------------------------------------
    def encode_unimodal(self, batch: Batch, names=None):
        """x's encoder output in its row; in the label's row the class probabilities known for y
        (one_hot(y) where given, else q(y|x) where x is, else uniform), zero-padded; see the
        module docstring."""
        use = set(self.names if names is None else names)
        first = next(iter(batch.data.values()))
        b, width, k = len(first), self.modality_latent_dim(self.config), self.num_classes
        zeros = torch.zeros(b, width, device=first.device)
        x_mu, x_logvar, x_present = zeros, zeros, torch.zeros(b, dtype=torch.bool, device=first.device)
        probs = torch.full((b, k), 1.0 / k, device=first.device)
        if self.x_name in batch.data and self.x_name in use:
            q = self.modalities[self.x_name].encode(batch.data[self.x_name])
            x_mu, x_logvar, x_present = q.mu, q.logvar, batch.present(self.x_name)
            probs = torch.where(x_present.unsqueeze(-1), self.class_logits(batch.data[self.x_name]).softmax(-1), probs)
        label, y_present = self.config.label, torch.zeros_like(x_present)
        if label in batch.data and label in use:
            y_present = batch.present(label)
            y = batch.data[label].masked_fill(~y_present, 0)
            probs = torch.where(y_present.unsqueeze(-1), F.one_hot(y, k).to(probs.dtype), probs)
        rows = {self.x_name: (x_mu, x_logvar, x_present),
                label: (torch.cat([probs, zeros[:, k:]], -1), zeros, y_present)}
        return tuple(torch.stack([rows[n][i] for n in self.names]) for i in range(3))

    def _parts(self, mu, logvar, present) -> tuple[torch.Tensor, Gaussian, torch.Tensor]:
        """(class probabilities [B,K], q(z|x,y) [K,B,D], x present [B]) from encode_unimodal's output."""
        xi = self.x_index
        probs = mu[self.label_index, :, :self.num_classes]
        return probs, self.class_posteriors(torch.cat([mu[xi], logvar[xi]], -1)), present[xi]

    def fuse(self, mu, logvar, present) -> Gaussian:
        """sum_y q(y|.) q(z|x,y), moment-matched to one Gaussian [B,D]; N(0, I) without x."""
        probs, q, have_x = self._parts(mu, logvar, present)
        w = probs.T.unsqueeze(-1)  # [K,B,1]
        mean = (w * q.mu).sum(0)
        var = (w * (q.logvar.exp() + q.mu.pow(2))).sum(0) - mean.pow(2)
        logvar_mix = clamp_logvar(var.clamp_min(math.exp(LOGVAR_MIN)).log())
        have_x = have_x.unsqueeze(-1)
        return Gaussian(torch.where(have_x, mean, 0.0), torch.where(have_x, logvar_mix, 0.0))

    def draw_codes(self, mu, logvar, present, n: int, mean: bool = False) -> torch.Tensor:
        """Full codes [n,B,D+K]: y ~ the class probabilities (their argmax with mean=True), then
        z ~ q(z|x,y) (its mean with mean=True), z ~ N(0, I) (0) where x is missing."""
        probs, q, have_x = self._parts(mu, logvar, present)
        b = len(probs)
        if mean:
            y = probs.argmax(-1).expand(n, -1)
        else:
            y = torch.multinomial(probs, n, replacement=True).T  # [n,B]
        cols = torch.arange(b, device=y.device).expand(n, -1)
        q_y = q[y, cols]  # [n,B,D]
        z, prior = (q_y.mu, torch.zeros_like(q_y.mu)) if mean else (q_y.rsample(), torch.randn_like(q_y.mu))
        return self.with_class(torch.where(have_x.unsqueeze(-1), z, prior), y)

    def draw(self, mu, logvar, present, n: int) -> torch.Tensor:
        """n draws [n,B,D] of z: y ~ q(y|.), then z ~ q(z|x,y) (N(0, I) without x)."""
        return self.draw_codes(mu, logvar, present, n)[..., :self.config.latent_dim]

    def full_code(self, mu, logvar, present) -> torch.Tensor:
        return self.draw_codes(mu, logvar, present, 1, mean=True)[0]

    def full_code_dim(self) -> int:
        return self.modality_latent_dim(self.config)

    def decoder_codes(self, name, z, mu, logvar, present, from_prior: bool = False) -> torch.Tensor:
        """[z, one_hot(y_hat)]: the decoder of x also reads the class (see full_code)."""
        y = self._parts(mu, logvar, present)[0].argmax(-1)
        return self.with_class(z, y)

    # -- user API --------------------------------------------------------------------------------
    @torch.no_grad()
    def classify(self, batch, mask=None) -> torch.Tensor:
        """q(y|x): class probabilities [B,K] (uniform for examples whose x is missing)."""
        batch = self.as_batch(batch, mask)
        if self.x_name not in batch.data:
            raise InputError(f"classify needs the data modality {self.x_name!r}; the batch holds {list(batch.data)}")
        probs = self.class_logits(batch.data[self.x_name]).softmax(-1)
        return torch.where(batch.present(self.x_name).unsqueeze(-1), probs, 1.0 / self.num_classes)

    @torch.no_grad()
    def generate(self, batch, given=None, targets=None, n: int = 1, mean: bool = False, mask=None,
                 raw: bool = False, **options) -> dict[str, Any]:
        """Decode codes drawn from the given modalities (see the module docstring)."""
        check_count(n)
        batch = self.as_batch(batch, mask)
        targets = self.names if targets is None else self.check_names(targets, "targets")
        mu, logvar, present = self.encode_unimodal(batch, self._given(batch, given))
        code = self.draw_codes(mu, logvar, present, n, mean)
        return self.decode(code[0] if n == 1 else code, targets, raw=raw, **options)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, targets=None, raw: bool = False, **options):
        """Full codes [z, one_hot(y)] ([n,B,D+K] or [B,D+K]) -> {name: output}; the label is the
        argmax of the code's class part."""
        width, d = self.full_code_dim(), self.config.latent_dim
        if z.shape[-1] != width:
            raise InputError(f"m2 decodes codes [z, one-hot class] of size {width}, got shape {list(z.shape)}; "
                             "use generate or sample")
        targets = self.names if targets is None else self.check_names(targets, "targets")
        label = self.config.label
        out = {}
        if any(t != label for t in targets):
            out = super().decode(z, [t for t in targets if t != label], raw=raw, **options)
        if label in targets:
            squeeze = z.dim() == 2
            y = z[..., d:].argmax(-1)  # [B] or [n,B]
            out[label] = y if raw else self._user_output(label, y.unsqueeze(0) if squeeze else y, squeeze)
        return {t: out[t] for t in targets}

    @torch.no_grad()
    def sample(self, n: int, targets=None, raw: bool = False, **options):
        """y ~ p(y) (uniform), z ~ the prior, decoded."""
        check_count(n)
        y = torch.randint(self.num_classes, (n,), device=self.device)
        return self.decode(self.with_class(self.prior_sample(n), y), targets, raw=raw, **options)

    @torch.no_grad()
    def reconstruct(self, batch, mask=None, raw: bool = False, **options):
        """Every modality decoded from the full code of the given ones."""
        batch = self.as_batch(batch, mask)
        return self.decode(self.full_code(*self.encode_unimodal(batch)), raw=raw, **options)


register_model("m2", M2)
