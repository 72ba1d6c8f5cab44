"""The sampling prior's part of a model config: `prior: {kind: gmm, components: 10}` or
`prior: {kind: flow, transforms: 3}`.

Each kind has its own options (KIND_OPTIONS). Giving an option of the other kind is an error
naming it, and a saved config holds only the chosen kind's options, so switching the kind
(`--set model.prior.kind=flow` on a gmm config) fails loudly instead of carrying a mixture's
`components` into a flow unnoticed.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from omnivae.config import PositiveInt, StrictModel

KIND_OPTIONS = {"gmm": ("components", "covariance"),
                "flow": ("transforms", "hidden", "bins", "steps", "lr")}


class PriorConfig(StrictModel):
    kind: Literal["gmm", "flow"] = "gmm"
    # gmm (omnivae.priors.gmm): mixture components and covariance type
    components: int = 10
    covariance: Literal["full", "diag"] = "full"
    # flow (omnivae.priors.flow): zuko neural spline flow; autoregressive transforms, hidden
    # widths of each transform's network, spline bins, Adam steps (None: 60 passes over the
    # data, at least 100 and at most 1500) and learning rate
    transforms: PositiveInt = 3
    hidden: list[PositiveInt] = Field(default=[128, 128], min_length=1)
    bins: PositiveInt = 8
    steps: PositiveInt | None = None
    lr: float = Field(default=1e-3, gt=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _own_options_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kind = data.get("kind", "gmm")
        if kind not in KIND_OPTIONS:
            return data  # the kind field's own check names the allowed kinds
        foreign = [k for keys in KIND_OPTIONS.values() for k in keys if k in data and k not in KIND_OPTIONS[kind]]
        if foreign:
            raise ValueError(f"{foreign} apply to another kind of prior, not to kind {kind!r} "
                             f"(whose options are {list(KIND_OPTIONS[kind])}); leave them out")
        return data

    @field_validator("components")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"components must be >= 1, got {v}")
        return v

    @model_serializer(mode="wrap")
    def _dump_own_options(self, handler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in ("kind", *KIND_OPTIONS[self.kind])}
