"""Scoring and decoding for the autoregressive text decoders, batched over all codes.

Every strategy returns ids [N, width] in the prepared form: tokens, <eos>, then <pad>;
<eos> is forced at the last step so each row ends within `steps` tokens.
"""
from __future__ import annotations

from typing import Callable

import torch

from omnivae.modalities.base import full_precision
from omnivae.modalities.text.networks import real_mask
from omnivae.modalities.text.tokenizer import BOS, EOS, PAD, UNK


def teacher_inputs(x: torch.Tensor, word_dropout: float = 0.0) -> torch.Tensor:
    """<bos> + x[:, :-1]; with word_dropout, tokens after <bos> become <unk> at that rate."""
    inp = torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], 1)
    if word_dropout > 0:
        drop = torch.rand(inp.shape, device=x.device) < word_dropout
        drop[:, 0] = False
        inp = inp.masked_fill(drop, UNK)
    return inp


def sequence_log_prob(decoder, z: torch.Tensor, x: torch.Tensor, word_dropout: float = 0.0) -> torch.Tensor:
    """Sum of log p(token) over the positions up to and including <eos>: z[N,D], x[N,L] -> [N]."""
    mask = real_mask(x)
    width = int(mask.sum(1).max())  # nothing after the longest caption can matter
    x, mask = x[:, :width], mask[:, :width]
    logp = torch.log_softmax(full_precision(decoder(teacher_inputs(x, word_dropout), z)), -1)
    target = x.masked_fill(~mask, EOS)  # a finite entry; masked out below
    token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, token_logp, torch.zeros_like(token_logp)).sum(1)


def _decode(decoder, z: torch.Tensor, steps: int, width: int, pick: Callable) -> torch.Tensor:
    n = len(z)
    out = torch.full((n, width), PAD, dtype=torch.long, device=z.device)
    token = torch.full((n,), BOS, dtype=torch.long, device=z.device)
    done = torch.zeros(n, dtype=torch.bool, device=z.device)
    state = decoder.start(z)
    for t in range(steps):
        logits, state = decoder.step(token, state)
        token = torch.full_like(token, EOS) if t == steps - 1 else pick(logits)
        out[:, t] = token.masked_fill(done, PAD)
        done = done | (token == EOS)
        if done.all():
            break
    return out


def greedy(decoder, z: torch.Tensor, steps: int, width: int) -> torch.Tensor:
    return _decode(decoder, z, steps, width, lambda logits: logits.argmax(-1))


def sample(decoder, z: torch.Tensor, steps: int, width: int, temperature: float = 1.0, top_k: int = 0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral sampling from softmax(logits / temperature), restricted to the top_k tokens if top_k > 0."""
    def pick(logits):
        # shifted to <= 0 so a tiny temperature cannot overflow; one below float32's range is 0, and
        # the 0/0 it gives at the best tokens becomes 0: the limit of sampling as T -> 0 is greedy
        logits = torch.nan_to_num((logits - logits.max(-1, keepdim=True).values) / temperature, nan=0.0)
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
    return _decode(decoder, z, steps, width, pick)


def beam_search(decoder, z: torch.Tensor, steps: int, width: int, beam_size: int = 4,
                keep_greedy: bool = True) -> torch.Tensor:
    """Most probable sequence found keeping beam_size prefixes per code (no length penalty).

    With keep_greedy the greedy sequence is a candidate too, so the result never scores below it.
    """
    n, k, dev = len(z), beam_size, z.device
    state = decoder.start(z.repeat_interleave(k, 0))  # row i*k + j is beam j of code i
    scores = torch.full((n, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: keep one
    seqs = torch.full((n, k, width), PAD, dtype=torch.long, device=dev)
    token = torch.full((n * k,), BOS, dtype=torch.long, device=dev)
    done = torch.zeros(n, k, dtype=torch.bool, device=dev)
    for t in range(steps):
        logits, state = decoder.step(token, state)
        logp = torch.log_softmax(logits, -1).view(n, k, -1)
        vocab = logp.shape[-1]
        if t == steps - 1:  # the last position must hold <eos>
            forced = torch.full_like(logp, float("-inf"))
            forced[..., EOS] = logp[..., EOS]
            logp = forced
        ended = torch.full_like(logp[0, 0], float("-inf"))
        ended[PAD] = 0.0  # a finished beam can only continue with <pad>, at no cost
        logp = torch.where(done[..., None], ended, logp)
        scores, flat = (scores[..., None] + logp).view(n, -1).topk(k, -1)
        beam, token = flat // vocab, flat % vocab
        rows = (beam + torch.arange(n, device=dev)[:, None] * k).view(-1)
        state = tuple(s[rows] for s in state)
        seqs = seqs.gather(1, beam[..., None].expand(-1, -1, width)).clone()
        seqs[:, :, t] = token
        done = done.gather(1, beam) | (token == EOS)
        token = token.view(-1)
        if done.all():
            break
    best = seqs[torch.arange(n, device=dev), scores.argmax(1)]
    if not keep_greedy:
        return best
    fallback = greedy(decoder, z, steps, width)
    better = sequence_log_prob(decoder, z, fallback) > sequence_log_prob(decoder, z, best)
    return torch.where(better[:, None], fallback, best)
