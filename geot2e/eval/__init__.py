"""Evaluation of geot2e models on held-out real data (see docs/evaluation.md).

- :mod:`~geot2e.eval.metrics`: PSNR, SSIM, texture ratio and mean-colour error over the
  synthesized pixels, in a common scale.
- :mod:`~geot2e.eval.holdout`: crops of Landsat scene 224/077 outside the training
  scene's footprint.
- :mod:`~geot2e.eval.cloud_removal`: geot2e against classical fills on cloud-like masks.
- :mod:`~geot2e.eval.resolution_probe`: does a tile generated at a GSD look like that GSD?
- :mod:`~geot2e.eval.text_control`: miniature zero-shot Cls-OA with a guidance sweep.

``benchmarks/eval_default.py`` runs them all and prints the tables.
"""
from .cloud_removal import (CloudRemovalConfig, check_targets, cloud_removal_table, run_cloud_removal,
                            targets_table)
from .common import model_info, to_json
from .holdout import heldout_crops
from .metrics import colour_error, masked_metrics, psnr, ssim, texture_ratio
from .resolution_probe import ProbeConfig, resolution_table, run_resolution_probe
from .text_control import TextControlConfig, run_text_control, text_control_table

__all__ = ["masked_metrics", "psnr", "ssim", "texture_ratio", "colour_error", "heldout_crops",
           "CloudRemovalConfig", "run_cloud_removal", "cloud_removal_table", "check_targets", "targets_table",
           "ProbeConfig", "run_resolution_probe", "resolution_table", "TextControlConfig", "run_text_control",
           "text_control_table", "model_info", "to_json"]
