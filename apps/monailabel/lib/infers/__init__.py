"""Infer tasks of the xray2mri MONAI Label app."""

from .xray2mri import GenerateMri

__all__ = ["GenerateMri"]
