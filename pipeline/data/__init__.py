"""Data stage: the synthetic cohort (``synth``), datalists (``manifests``) and the OAI import (``oai``)."""
