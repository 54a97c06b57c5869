"""Evaluation stage: metrics, baselines and the report that judges a model against them."""
