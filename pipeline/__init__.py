"""xray2mri: one knee radiograph in, one 3-D MRI volume out."""
