"""Measurement: image metrics (PSNR, SSIM), feature-space sample metrics (Fréchet distance, precision and
recall), sample quality and the feature network they are measured in.
"""
