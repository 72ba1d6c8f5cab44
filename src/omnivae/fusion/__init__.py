"""Fusion rules: unimodal posteriors stacked as mu, logvar [M,B,D] plus presence [M,B]
become joint posteriors. Every rule handles all requested subsets in one tensor op."""
from omnivae.fusion.moe import mixture_log_prob, moment_matched_mixture, sample_mixture
from omnivae.fusion.mopoe import all_subsets, mixture_of_products
from omnivae.fusion.poe import product_of_experts

__all__ = ["product_of_experts", "mixture_log_prob", "moment_matched_mixture", "sample_mixture", "all_subsets",
           "mixture_of_products"]
