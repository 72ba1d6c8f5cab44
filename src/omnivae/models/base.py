"""MultimodalModel: modalities + a fusion rule + an objective. Subclasses state the
objective (`loss`) and, where it differs from a product of experts, the fusion."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral
from typing import Any, ClassVar, Literal

import torch
from pydantic import SerializeAsAny, field_validator
from torch import nn

from omnivae.batch import Batch, LossOutput, presence_mask
from omnivae.config import StrictModel
from omnivae.distributions import Gaussian
from omnivae.errors import ConfigError, InputError
from omnivae.fusion import product_of_experts
from omnivae.modalities import ModalitySpec, build_modality, parse_spec, MODALITY_KINDS
from omnivae.priors import PriorConfig, build_prior
from omnivae.priors.conditional import ConditionalFlowPrior, ConditionalPriorConfig

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")


class ModelConfig(StrictModel):
    model: str
    latent_dim: int = 16
    modalities: dict[str, SerializeAsAny[ModalitySpec]]
    beta: float = 1.0  # weight of the KL term (beta-VAE when > 1)
    prior: PriorConfig | None = None  # sampling prior fitted after training (omnivae.priors.fit_prior); None: N(0, I)
    free_bits: float = 0.0  # nats per latent dim: the objective's KL is sum_d max(free_bits, batch-mean KL_d)
    # likelihood rescaling for modalities whose spec leaves `weight` unset: "dimension" weighs
    # modality m by max_n dim_n / dim_m (dim: values its likelihood scores), as in MMVAE's and
    # multivae's rescaling, so a six-token caption is not swamped by a 3x32x32 image; "none": 1
    rescale: Literal["dimension", "none"] = "dimension"
    # a flow p(code | given modalities) fitted after training; generate and sample draw from it
    # (omnivae.priors.conditional; None: draws come from the posterior of the given modalities)
    conditional_prior: ConditionalPriorConfig | None = None

    @field_validator("modalities", mode="before")
    @classmethod
    def _parse_modalities(cls, value: Any) -> dict[str, ModalitySpec]:
        if not isinstance(value, Mapping) or not value:
            raise ValueError("needs at least one modality: {name: {kind: ..., ...}}")
        for name in value:
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                raise ValueError(f"modality name {name!r} must start with a letter and use only "
                                 "letters, digits, '_' or '-' (it names files in a model folder)")
        return {name: parse_spec(name, spec) for name, spec in value.items()}

    @field_validator("latent_dim")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"latent_dim must be >= 1, got {v}")
        return v

    @field_validator("free_bits")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if not v >= 0 or v == float("inf"):
            raise ValueError(f"free_bits must be a finite number >= 0 (nats per latent dimension), got {v}")
        return v


def check_count(n, name: str = "n") -> int:
    """n (samples per input) is a whole number >= 1; 2.5 or "3" would reach torch.randn as a bare error."""
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise InputError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


class MultimodalModel(nn.Module):
    """Shared parts of every model; see the module docstring."""

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    about: ClassVar[str] = ""  # what the model is, in a few words (`omnivae models`, model cards)
    paper: ClassVar[str] = ""  # its reference
    supports_free_bits: ClassVar[bool] = False  # True where the objective applies config.free_bits
    supports_conditional_prior: ClassVar[bool] = True  # False where codes are not decoded alone (conditions)
    deterministic_codes: ClassVar[bool] = False  # True where codes are points (autoencoders: no KL prior)
    # True where each modality's row of encode_unimodal depends on that modality alone, so the
    # views of one batch share one encoding pass (encode_views); False where a row reads several
    # modalities (JMVAE's joint encoder, M2's label row) or the model encodes otherwise (ladder)
    encodes_modalities_apart: ClassVar[bool] = True

    def __init__(self, config: ModelConfig, modalities: dict[str, nn.Module] | None = None):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        if config.free_bits > 0 and not self.supports_free_bits:
            raise ConfigError(f"model {config.model!r} does not use free_bits (got {config.free_bits}); "
                              "it applies to vae, mvae and mopoe")
        self.names: list[str] = list(config.modalities)
        if modalities is None:
            dim = self.modality_latent_dim(config)
            modalities = {n: build_modality(n, s, dim) for n, s in config.modalities.items()}
        self.modalities = nn.ModuleDict(modalities)
        self.config = config = self._resolve_weights(config)
        self.prior = build_prior(config.prior, config.latent_dim) if config.prior is not None else None
        self.conditional_prior = None
        if config.conditional_prior is not None:
            if not self.supports_conditional_prior:
                raise ConfigError(f"model {config.model!r} does not take a conditional_prior")
            self.conditional_prior = ConditionalFlowPrior(self.full_code_dim(), len(self.names),
                                                          self.modality_latent_dim(config), config.conditional_prior)
        self.check_config()

    def _resolve_weights(self, config: ModelConfig) -> ModelConfig:
        """Fill in each unset modality weight from config.rescale; the config (saved with the
        model) then records the numbers used."""
        unset = [n for n, s in config.modalities.items() if s.weight is None]
        if not unset:
            return config
        dims = {n: self.modalities[n].data_dim() for n in self.names}
        top = max(dims.values())
        specs = dict(config.modalities)
        for name in unset:
            weight = top / dims[name] if config.rescale == "dimension" else 1.0
            specs[name] = specs[name].model_copy(update={"weight": float(weight)})
            self.modalities[name].spec = specs[name]
        return config.model_copy(update={"modalities": specs})

    def likelihood_weights(self) -> dict[str, float]:
        """The weight each modality's log-likelihood carries in the objective."""
        return {n: float(self.modalities[n].spec.weight) for n in self.names}

    def check_config(self) -> None:
        """Models with requirements on their modalities raise ConfigError here."""

    @classmethod
    def run_defaults(cls, train) -> dict[str, dict[str, Any]]:
        """Options this model's runs take where the run config leaves them unset, by section:
        {"train": {...}, "model": {...}} (train_run, `omnivae train`; run.yaml records the values
        used). `train`: the run's TrainConfig."""
        return {}

    @classmethod
    def modality_latent_dim(cls, config: ModelConfig) -> int:
        """Size of the code each modality encodes to and decodes from (private latents
        or conditions make it larger than config.latent_dim)."""
        return config.latent_dim

    # -- what training asks of the model ------------------------------------------------------
    def on_train_epoch_start(self, epoch: int) -> None:
        """Called by the trainer at each epoch start (staged objectives use it)."""

    def adversarial_problem(self, name: str) -> str | None:
        """Why an adversarial term (omnivae.adversarial) may not train modality `name`'s decoder,
        or None if it may. Models whose objective or outputs rule it out say so here."""
        return None

    def decoder_codes(self, name: str, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                      present: torch.Tensor, from_prior: bool = False) -> torch.Tensor:
        """What modality `name`'s decoder reads for shared codes z [B,D] of the examples encoded
        as (mu, logvar, present) [M,B,W]: z itself, unless the decoder also reads a part of its
        own (a private code, a condition embedding), which is appended here. from_prior: z comes
        from the prior, not from these examples' posteriors."""
        return z

    @property
    def decodes_shared_codes(self) -> bool:
        """Whether every decoder reads the shared code z alone (no private part, condition or
        hierarchy in between), so log p(x_m | z) is modality m's own likelihood at z."""
        return type(self).decoder_codes is MultimodalModel.decoder_codes

    @classmethod
    def from_data(cls, config: ModelConfig, raw) -> "MultimodalModel":
        """Build the model, fitting preprocessing (tokenizers, scaling) on training data `raw`."""
        built = {}
        for name, spec in config.modalities.items():
            if name not in raw.modalities:
                raise InputError(f"the data has no modality {name!r}; it has {raw.names}")
            present = raw.subset(raw.mask[name].nonzero()[0])
            values = present.modalities[name]
            references = present.info.get("references", {}).get(name)
            if references is not None:  # several values per example: fit on all (a tokenizer sees every caption)
                values = [v for refs in references for v in refs]
            dim = cls.modality_latent_dim(config)
            built[name] = MODALITY_KINDS[spec.kind].from_data(name, spec, dim, values)
        config = config.model_copy(update={"modalities": {n: m.spec for n, m in built.items()}})
        return cls(config, built)

    # -- batches -------------------------------------------------------------------------
    def as_batch(self, batch: Batch | Mapping[str, Any], mask: Mapping[str, Any] | None = None) -> Batch:
        """A Batch passes through; a dict of user data is prepared and checked."""
        if isinstance(batch, Batch):
            return batch
        if not isinstance(batch, Mapping) or not batch:
            raise InputError(f"expected a Batch or a non-empty dict {{modality: data}}, got {type(batch).__name__}")
        self.check_names(batch.keys(), "batch")
        device = self.device
        data = {n: self.modalities[n].accept(v).to(device) for n, v in batch.items()}
        sizes = {n: len(x) for n, x in data.items()}
        if len(set(sizes.values())) != 1:
            raise InputError(f"modalities have different batch sizes: {sizes}")
        if not next(iter(sizes.values())):
            raise InputError(f"the batch holds no examples ({sizes})")
        masks = {}
        for n, m in (mask or {}).items():
            self.check_names([n], "mask")
            if n not in data:
                raise InputError(f"mask names {n!r}, which is not in the batch ({list(data)})")
            masks[n] = torch.from_numpy(presence_mask(m, f"mask of {n!r}")).to(device)
            if masks[n].shape != (sizes[n],):
                raise InputError(f"mask of {n!r} has shape {list(masks[n].shape)}, expected [{sizes[n]}]")
        return Batch(data, masks)

    def check_names(self, names, what: str) -> list[str]:
        names = list(names) if isinstance(names, Iterable) and not isinstance(names, str) else [names]
        unknown = [n for n in names if not isinstance(n, str) or n not in self.modalities]
        if unknown:
            raise InputError(f"unknown modality name(s) {unknown} in {what}; this model has {self.names}")
        return names

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- encoders and fusion -------------------------------------------------------------
    def encode_unimodal(self, batch: Batch, names: Sequence[str] | None = None):
        """Run each modality's encoder once -> mu, logvar [M,B,D], presence [M,B] (model order).

        Modalities missing from the batch (or not in `names`) get presence False."""
        use = set(self.names if names is None else names)
        first = next(iter(batch.data.values()))
        b, d = len(first), self.modality_latent_dim(self.config)
        mus, logvars, present = [], [], []
        for name in self.names:
            if name in batch.data and name in use:
                q = self.modalities[name].encode(batch.data[name])
                mus.append(q.mu), logvars.append(q.logvar), present.append(batch.present(name))
            else:
                zeros = first.new_zeros((b, d), dtype=torch.float32)
                mus.append(zeros), logvars.append(zeros)
                present.append(torch.zeros(b, dtype=torch.bool, device=first.device))
        return torch.stack(mus), torch.stack(logvars), torch.stack(present)

    def fuse(self, mu: torch.Tensor, logvar: torch.Tensor, present: torch.Tensor) -> Gaussian:
        """Joint posterior [B,D] of the present modalities. Default: their product of experts
        (a single modality's own posterior; the prior where none is present)."""
        return product_of_experts(mu, logvar, present.unsqueeze(0), prior_expert=False)[0]

    def draw(self, mu, logvar, present, n: int) -> torch.Tensor:
        """n draws [n,B,D] from the joint posterior of the present modalities."""
        return self.fuse(mu, logvar, present).rsample(n)

    def full_code(self, mu, logvar, present) -> torch.Tensor:
        """The code [B,T] that holds everything the decoders need for these inputs (the joint
        posterior mean); what a conditional prior learns to draw."""
        return self.fuse(mu, logvar, present).mu

    def full_code_dim(self) -> int:
        return self.config.latent_dim

    def decode_full_code(self, code: torch.Tensor, targets, raw: bool = False, **options):
        """Full codes [n,B,T] (or [B,T]) -> {name: output}."""
        return self.decode(code, targets, raw=raw, **options)

    def uses_conditional_prior(self, sampler: str) -> bool:
        """Whether generation draws from the fitted conditional prior ("auto": when there is one)."""
        if sampler not in ("auto", "posterior", "conditional"):
            raise InputError(f"sampler must be 'auto', 'posterior' or 'conditional', got {sampler!r}")
        fitted = self.conditional_prior is not None and self.conditional_prior.is_fitted
        if sampler == "conditional" and not fitted:
            raise InputError("sampler='conditional' needs a fitted conditional prior: train with "
                             "model.conditional_prior set, or call omnivae.priors.conditional.fit_conditional_prior")
        return fitted and sampler != "posterior"

    def log_likelihoods(self, z: torch.Tensor, batch: Batch, names=None, weighted: bool = True) -> dict[str, torch.Tensor]:
        """Per-modality log p(x_m | z) [S,B], zero where x_m is missing; weighted by each
        modality's likelihood weight (the objective's terms) unless weighted=False (a likelihood)."""
        out = {}
        for name in names or self.names:
            if name not in batch.data:
                continue
            mod = self.modalities[name]
            ll = mod.log_likelihood(z, batch.data[name])
            ll = ll * mod.spec.weight if weighted and mod.spec.weight != 1.0 else ll
            out[name] = ll * batch.present(name).to(ll.dtype) if name in batch.mask else ll
        return out

    # -- the objective ---------------------------------------------------------------------
    def loss(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        raise NotImplementedError

    def forward(self, batch: Batch, beta_scale: float = 1.0) -> LossOutput:
        return self.loss(batch, beta_scale)

    # -- user API ---------------------------------------------------------------------------
    def _given(self, batch: Batch, given) -> list[str]:
        given = list(batch.data) if given is None else self.check_names(given, "given")
        missing = [g for g in given if g not in batch.data]
        if missing:
            raise InputError(f"given={missing} but the batch only holds {list(batch.data)}")
        return given

    @torch.no_grad()
    def encode(self, batch, given: Sequence[str] | None = None, sample: bool = False,
               mask=None) -> torch.Tensor:
        """Latent codes [B,D] from the modalities in `given` (default: all in the batch):
        the joint posterior mean, or a draw with sample=True."""
        batch = self.as_batch(batch, mask)
        mu, logvar, present = self.encode_unimodal(batch, self._given(batch, given))
        if sample:
            return self.draw(mu, logvar, present, 1)[0]
        return self.fuse(mu, logvar, present).mu

    @torch.no_grad()
    def encode_views(self, batch: Batch, views: dict[str, Sequence[str] | None]) -> dict[str, torch.Tensor]:
        """Posterior means [B,D] of one batch for each view {name: the modalities given (None: all
        in the batch)}, equal to `encode(batch, given)` per view. Where encodings are per modality
        (encodes_modalities_apart), each encoder runs once and only the fusion runs per view."""
        if not self.encodes_modalities_apart:
            return {v: self.encode(batch, given) for v, given in views.items()}
        mu, logvar, present = self.encode_unimodal(batch)
        out = {}
        for view, given in views.items():
            use = torch.tensor([m in batch.data and (given is None or m in given) for m in self.names],
                               device=mu.device)
            keep = use[:, None, None]  # as encode_unimodal(batch, given) leaves the others: zeros, absent
            out[view] = self.fuse(torch.where(keep, mu, 0.0), torch.where(keep, logvar, 0.0),
                                  present & use[:, None]).mu
        return out

    @torch.no_grad()
    def generate(self, batch, given: Sequence[str] | None = None, targets: Sequence[str] | None = None,
                 n: int = 1, mean: bool = False, mask=None, raw: bool = False, sampler: str = "auto",
                 latent_temperature: float | None = None, consensus: int | None = None,
                 **options) -> dict[str, Any]:
        """Generate `targets` (default: all) from the modalities in `given` (default: all
        in the batch). Returns {name: output}; with n > 1 outputs have a leading n dim
        (lists of n lists for text). raw=True returns model-space tensors.

        sampler: "auto" draws codes from the fitted conditional prior if the model has one
        (sharp, varied samples where the given modalities leave things open), else from the
        posterior of the given modalities ("posterior"); mean=True decodes the posterior mean.
        latent_temperature scales the conditional prior's noise (< 1: safer, less varied; 1: the
        fitted law; None: the prior's configured default, conditional_prior.temperature, 0.7).
        consensus: with the conditional prior, captions and classes (kinds that vote) are the value
        that many draws agree on (Modality.agreed), each image or vector one draw (the first);
        1 decodes every target from one draw; None: conditional_prior.consensus, 16."""
        check_count(n)
        batch = self.as_batch(batch, mask)
        targets = self.names if targets is None else self.check_names(targets, "targets")
        mu, logvar, present = self.encode_unimodal(batch, self._given(batch, given))
        if not mean and self.uses_conditional_prior(sampler):
            cp = self.conditional_prior
            k = cp.config.consensus if consensus is None else check_count(consensus, "consensus")
            k = max(self.modalities[t].draws_wanted(k) for t in targets)
            code = cp.sample(cp.context(mu, present), n * k, latent_temperature)  # [k*n,B,T]
            if k > 1:  # [k,n,B,T]: the k draws per output, of which images take the first
                code, options = code.unflatten(0, (k, n)), {**options, "consensus": k}
            return self.decode_full_code(code.select(-3, 0) if n == 1 else code, targets, raw=raw, **options)
        if mean:
            z = self.fuse(mu, logvar, present).mu.expand(n, -1, -1)
        else:
            z = self.draw(mu, logvar, present, n)
        return self.decode(z[0] if n == 1 else z, targets, raw=raw, **options)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, targets: Sequence[str] | None = None, raw: bool = False,
               consensus: int = 1, **options):
        """Codes z [n,B,D] (or [B,D]) -> {name: output} for each target modality. consensus=k:
        z holds k draws per output, [k,n,B,D] (or [k,B,D]); targets of kinds that vote decode the
        value the draws agree on (Modality.decode_draws), the others the first draw."""
        draws = z if consensus > 1 else None
        z = z[0] if consensus > 1 else z
        squeeze = z.dim() == 2
        z = z.unsqueeze(0) if squeeze else z
        n, b = z.shape[:2]
        out = {}
        for name in targets or self.names:
            mod = self.modalities[name]
            if draws is not None:
                x = mod.decode_draws(draws.reshape(consensus, n * b, -1), **options)
            else:
                x = mod.generate(z.reshape(n * b, -1), **options)
            out[name] = x.reshape(n, b, *x.shape[1:])
        if raw:
            return {k: v[0] if squeeze else v for k, v in out.items()}
        return {k: self._user_output(k, v, squeeze) for k, v in out.items()}

    def _user_output(self, name: str, x: torch.Tensor, squeeze: bool):
        mod = self.modalities[name]
        rows = [mod.to_output(x_i) for x_i in x]
        if squeeze:
            return rows[0]
        return torch.stack(rows) if isinstance(rows[0], torch.Tensor) else rows

    def prior_sample(self, n: int) -> torch.Tensor:
        """n codes [n,D] from the prior (a fitted prior, if the model has one)."""
        if self.prior is not None:
            return self.prior.sample(n)
        return torch.randn(n, self.config.latent_dim, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, targets: Sequence[str] | None = None, raw: bool = False, sampler: str = "auto",
               latent_temperature: float | None = None, **options):
        """Joint samples of all (or `targets`) modalities from the prior: the fitted conditional
        prior with nothing given, if there is one (sampler="auto"), else `prior_sample`."""
        check_count(n)
        if "consensus" in options:
            raise InputError("consensus is for generate(...) from given modalities: a joint sample decodes "
                             "every modality from one code, so that they agree")
        targets = self.names if targets is None else self.check_names(targets, "targets")
        if self.uses_conditional_prior(sampler):
            cp, dev = self.conditional_prior, self.device
            context = cp.context(torch.zeros(len(self.names), 1, cp.width, device=dev),
                                 torch.zeros(len(self.names), 1, dtype=torch.bool, device=dev))
            code = cp.sample(context, n, latent_temperature)[:, 0]
            return self.decode_full_code(code, targets, raw=raw, **options)
        return self.decode(self.prior_sample(n), targets, raw=raw, **options)

    @torch.no_grad()
    def reconstruct(self, batch, mask=None, raw: bool = False, **options):
        """Every modality regenerated from the joint posterior mean of the ones given."""
        batch = self.as_batch(batch, mask)
        z = self.encode(batch)
        return self.decode(z, self.names, raw=raw, **options)

    # -- files -------------------------------------------------------------------------------
    def save(self, folder) -> None:
        from omnivae.io import save_model

        save_model(self, folder)
