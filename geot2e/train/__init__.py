"""Training through the package: tile datasets, captions, masks, loops and configs."""
from .caption_table import CaptionTable
from .captions import caption_tile, content_class, measure_content
from .config import build_training_data, run_training
from .dataset import RasterSource, TileDataset, load_raster_source
from .git10m import Git10MDataset, MixedDataset
from .lora import add_lora, load_lora, merge_lora, save_lora, train_lora
from .loop import train_denoiser, train_vae
from .masks import random_mask
from .schema import StageConfig, TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "run_training", "TileDataset", "RasterSource", "load_raster_source",
           "StageConfig", "train_vae", "train_denoiser", "random_mask", "caption_tile", "content_class",
           "measure_content", "CaptionTable", "Git10MDataset", "MixedDataset", "build_training_data",
           "add_lora", "load_lora", "merge_lora", "save_lora", "train_lora"]
