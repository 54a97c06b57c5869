"""Tasks of the xray2mri MONAI Label app (imported as ``lib`` from the app folder, as MONAI Label apps do)."""
