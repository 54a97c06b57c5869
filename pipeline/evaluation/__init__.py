"""Evaluation stage: metrics, baselines and the report that judges a model against them.

One job per module: ``metrics`` (pure metrics), ``baselines``, ``inputs`` (what is read), ``measure``
(per-case rows), ``summary`` (aggregation, BCa intervals, quality bar from JSON criteria), ``figures``,
``markdown``, ``report`` (composes them) and ``run`` (``xray2mri evaluate``: evaluate.json, then the report).
"""
