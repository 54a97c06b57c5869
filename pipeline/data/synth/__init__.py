"""Synthetic paired knee cohort: tissue phantom, DESS-like MRI, cone-beam DRR radiograph, writers.

Modules: ``tissues`` (the tissue table), ``presets`` (sizes and spacings), ``phantom`` (label map
from implicit shapes, KL-grade effects), ``mri_render``, ``drr``, ``dicom_writer``,
``nifti_writer``, ``cohort`` (parallel, deterministic generation), ``preview`` (montage PNG).
Everything written is marked SYNTHETIC.
"""
