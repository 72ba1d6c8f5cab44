"""Weight penalties of the training loss. The L2 penalty is the optimiser's (TrainConfig.weight_decay:
torch.optim.Adam's weight_decay, added to the gradients); the L1 penalty is a loss term."""
from __future__ import annotations

import torch
from torch import nn

# layers whose "weight" is a per-channel scale, not a weight matrix: no penalty
NORMS = (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._NormBase)


def penalized_weights(module: nn.Module) -> list[nn.Parameter]:
    """The weight matrices and kernels of `module` (linear, conv, embedding, recurrent and attention
    layers: parameters whose name starts or ends with "weight"), without biases, norm parameters
    or other loose parameters such as learned likelihood scales; frozen parameters left out."""
    out = []
    for sub in module.modules():
        if isinstance(sub, NORMS):
            continue
        for name, p in sub.named_parameters(recurse=False):
            if p.requires_grad and (name.startswith("weight") or name.endswith("weight")):
                out.append(p)
    return out


def l1_penalty(weights: list[torch.Tensor]) -> torch.Tensor:
    """Sum of |w| over all the tensors."""
    return torch.stack([w.abs().sum() for w in weights]).sum()
