"""Token encoders (bidirectional GRU, Transformer) and z-conditioned autoregressive decoders.

Decoders share one interface: `forward(tokens[N,T], z[N,D]) -> logits[N,T,V]` for teacher
forcing, and `start(z) -> state`, `step(token[N], state) -> (logits[N,V], state)` for
generation, where state is a tuple of batch-first tensors (so beam search can reorder it).
<pad> and <bos> get logit -inf: they never appear as targets, so the model never predicts them.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from omnivae.modalities.text.tokenizer import BOS, EOS, PAD


def real_mask(x: torch.Tensor) -> torch.Tensor:
    """bool [B,L]: positions up to and including the first <eos> (all positions if none)."""
    is_eos = x == EOS
    first = torch.where(is_eos.any(1), is_eos.long().argmax(1), torch.full_like(x[:, 0], x.shape[1] - 1))
    return torch.arange(x.shape[1], device=x.device) <= first[:, None]


class GRUEncoder(nn.Module):
    def __init__(self, vocab: int, embed_dim: int, hidden: int, layers: int, dropout: float, out_dim: int):
        super().__init__()
        self.embed, self.drop = nn.Embedding(vocab, embed_dim, padding_idx=PAD), nn.Dropout(dropout)
        self.gru = nn.GRU(embed_dim, hidden, layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(2 * hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = real_mask(x).sum(1).cpu()
        packed = pack_padded_sequence(self.drop(self.embed(x)), lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # [layers*2, B, H]; the last two rows are the top layer's directions
        return self.head(torch.cat([h[-2], h[-1]], -1))


class TransformerEncoder(nn.Module):
    def __init__(self, vocab: int, max_len: int, embed_dim: int, hidden: int, layers: int, heads: int,
                 dropout: float, out_dim: int):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, embed_dim, padding_idx=PAD), nn.Embedding(max_len, embed_dim)
        layer = nn.TransformerEncoderLayer(embed_dim, heads, hidden, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        self.head = nn.Linear(embed_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = real_mask(x)
        h = self.embed(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        h = self.layers(h, src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1))  # mean over real tokens


class _Decoder(nn.Module):
    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(h).index_fill(-1, self.never, float("-inf"))


class GRUDecoder(_Decoder):
    """GRU whose initial hidden state comes from z, with z also concatenated to every input."""

    def __init__(self, vocab: int, embed_dim: int, hidden: int, layers: int, dropout: float, latent_dim: int):
        super().__init__()
        self.layers, self.hidden = layers, hidden
        self.embed, self.drop = nn.Embedding(vocab, embed_dim, padding_idx=PAD), nn.Dropout(dropout)
        self.init = nn.Linear(latent_dim, layers * hidden)
        self.gru = nn.GRU(embed_dim + latent_dim, hidden, layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(hidden, vocab)
        self.register_buffer("never", torch.tensor([PAD, BOS]), persistent=False)

    def _run(self, tokens, z, h):
        inp = torch.cat([self.drop(self.embed(tokens)), z[:, None].expand(-1, tokens.shape[1], -1)], -1)
        out, h = self.gru(inp, h.transpose(0, 1).contiguous())
        return self._logits(self.drop(out)), h.transpose(0, 1)

    def start(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return z, torch.tanh(self.init(z)).view(-1, self.layers, self.hidden)

    def forward(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self._run(tokens, *self.start(z))[0]

    def step(self, token: torch.Tensor, state: tuple[torch.Tensor, ...]):
        z, h = state
        logits, h = self._run(token[:, None], z, h)
        return logits[:, 0], (z, h)


class TransformerDecoder(_Decoder):
    """Causal Transformer; z is added to every position and attended to as one memory token."""

    def __init__(self, vocab: int, max_len: int, embed_dim: int, hidden: int, layers: int, heads: int,
                 dropout: float, latent_dim: int):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, embed_dim, padding_idx=PAD), nn.Embedding(max_len, embed_dim)
        self.z_in, self.z_mem = nn.Linear(latent_dim, embed_dim), nn.Linear(latent_dim, embed_dim)
        layer = nn.TransformerDecoderLayer(embed_dim, heads, hidden, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(embed_dim))
        self.out = nn.Linear(embed_dim, vocab)
        self.register_buffer("never", torch.tensor([PAD, BOS]), persistent=False)

    def forward(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.embed(tokens) + self.pos(torch.arange(t, device=tokens.device)) + self.z_in(z)[:, None]
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=tokens.device, dtype=h.dtype)
        return self._logits(self.layers(h, self.z_mem(z)[:, None], tgt_mask=causal, tgt_is_causal=True))

    def start(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return z, torch.zeros(len(z), 0, dtype=torch.long, device=z.device)

    def step(self, token: torch.Tensor, state: tuple[torch.Tensor, ...]):
        z, prefix = state
        prefix = torch.cat([prefix, token[:, None]], 1)  # no cache: captions are short
        return self.forward(prefix, z)[:, -1], (z, prefix)
