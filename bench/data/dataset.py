"""Images and targets from the index, with augmentation draws that belong to the data, not the model.

Images leave the dataset at their original size as float RGB in [0, 1]: resizing and
normalisation belong to torchvision's `GeneralizedRCNNTransform` inside the detector, which
also maps predictions back to original coordinates, so COCO evaluation needs no bookkeeping.

A training sample is asked for by `SampleKey(epoch, index)` and its flip is drawn from a
generator seeded with (seed, epoch, index): every backbone trained with a seed gets exactly the
same augmented images, whatever random numbers its model draws, in any worker process, and a
resumed run gets the images it would have got. A training image that cannot be read as it
loads (found hours in, on a set too large to decode up front) gives its place to the next
readable image in file order, again the same for every backbone and after a resume; the
target says which images were passed over, for the warning and data_report.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import DataError
from .coco import ImageIndex, check_image_size, image_path, load_split


class SampleKey(NamedTuple):
    epoch: int
    index: int


class CocoDetection(Dataset):
    """COCO detection images as (float RGB CHW tensor, {"boxes", "labels", "image_id"}).

    Labels are contiguous 1..K in sorted category-id order (0 is the detector's background);
    `label_to_category_id` maps them back for COCO evaluation. `hflip` applies in train mode only,
    and so does `skip_unreadable`: an unreadable image is replaced, and the target's "unreadable"
    lists (image id, reason) of each one passed over; otherwise it raises DataError.
    """

    def __init__(self, index: ImageIndex, image_dir: str | Path, ann_path: str | Path, train: bool,
                 hflip: float = 0.0, seed: int = 0, skip_unreadable: bool = False) -> None:
        self.index = index
        self.image_dir = Path(image_dir)
        self.ann_path = Path(ann_path)
        self.train = train
        self.hflip = hflip if train else 0.0
        self.seed = seed
        self.skip_unreadable = skip_unreadable and train
        self.ids: list[int] = index.image_ids.tolist()
        self.label_to_category_id = {label: int(c) for label, c in enumerate(index.category_ids, start=1)}
        self.num_classes = len(index.category_ids) + 1

    @classmethod
    def from_files(cls, ann_path: str | Path, image_dir: str | Path, train: bool, hflip: float = 0.0,
                   seed: int = 0) -> CocoDetection:
        """Read and check an annotation file (no cache) and open its images."""
        split = load_split(ann_path, image_dir, cache_dir=None, strict=False, keep_data=False)
        return cls(split.index, split.image_dir, split.ann_path, train, hflip, seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, dict[str, Any]]:
        epoch, position = key if isinstance(key, tuple) else (0, key)
        image, position, unreadable = self._load_readable(position)
        start, end = self.index.starts[position], self.index.starts[position + 1]
        boxes = torch.from_numpy(self.index.boxes[start:end].copy())
        labels = torch.from_numpy(self.index.labels[start:end].copy())
        if self.hflip and self.flips(epoch, position):
            canvas = tuple(image.shape[-2:])
            image = v2.functional.horizontal_flip(image)
            boxes = v2.functional.horizontal_flip(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas))
        target = {"boxes": boxes.as_subclass(torch.Tensor), "labels": labels, "image_id": self.ids[position]}
        if unreadable:
            target["unreadable"] = unreadable
        return image, target

    def flips(self, epoch: int, position: int) -> bool:
        """This sample's flip, from its own generator: (seed, epoch, index) -> the same draw anywhere."""
        return bool(np.random.default_rng([self.seed, epoch, position]).random() < self.hflip)

    def _load_readable(self, position: int) -> tuple[torch.Tensor, int, list[tuple[int, str]]]:
        """The image at `position` or, skipping unreadable ones, the next readable one in file order:
        (image, its position, [(image id, reason)] of those passed over)."""
        passed_over = []
        for candidate in [*range(position, len(self)), *range(position)]:
            try:
                return self._load(candidate), candidate, passed_over
            except DataError as err:
                if not self.skip_unreadable:
                    raise
                passed_over.append((self.ids[candidate], str(err)))
        raise DataError(f"{self.image_dir}: not one of the {len(self)} training images can be read")

    def _load(self, position: int) -> torch.Tensor:
        record = self.index.record(position)
        path = image_path(self.image_dir, record["file_name"], self.ann_path, record["id"])
        try:
            with Image.open(path) as pil:
                check_image_size(path, record, self.ann_path, pil.size)
                rgb = pil.convert("RGB")
        except (OSError, Image.DecompressionBombError) as err:
            raise DataError(f"{path}: cannot read image id {record['id']} ({err}); replace or remove it") from None
        return v2.functional.to_dtype(v2.functional.to_image(rgb), scale=True).as_subclass(torch.Tensor)

    def aspect_ratios(self) -> list[float]:
        """Width / height per image, from the annotation file (no decoding), for batching."""
        return (self.index.widths / self.index.heights).tolist()
