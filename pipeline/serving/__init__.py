"""Serving stage: prediction from a bundle, the SYNTHETIC-marked writers, inference outputs and bundle export."""
