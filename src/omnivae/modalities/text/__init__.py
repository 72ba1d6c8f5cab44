"""Text captions: tokenizer, GRU/Transformer networks, decoding strategies."""
from omnivae.modalities.text.modality import TextModality, TextSpec

__all__ = ["TextModality", "TextSpec"]
