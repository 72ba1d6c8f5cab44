"""Thin functions over a trained model: generate, embed, retrieve, detect, impute."""
