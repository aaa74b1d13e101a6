"""Detection data: the embedded synthetic set, COCO-format files, the dataset and its batches.

`synthetic` generates the embedded set, `coco` reads and checks annotation files into a
compact index, `dataset` turns index entries into images and targets, `sampling` decides
which images form which batch, `unreadable` warns about and records the training images
that could not be read as they loaded.
"""
from ..errors import DataError
from .coco import ImageIndex, Split, coco_layout, ground_truth, load_split, skip_warnings
from .dataset import CocoDetection, SampleKey
from .sampling import PairedBatchSampler, build_eval_loader, build_train_loader, collate, epoch_batches
from .synthetic import SYNTHETIC_CATEGORIES, make_synthetic
from .unreadable import UnreadableImages

__all__ = [
    "DataError", "ImageIndex", "Split", "coco_layout", "ground_truth", "load_split", "skip_warnings",
    "CocoDetection", "SampleKey", "PairedBatchSampler", "build_eval_loader", "build_train_loader", "collate",
    "epoch_batches", "SYNTHETIC_CATEGORIES", "make_synthetic", "UnreadableImages",
]
