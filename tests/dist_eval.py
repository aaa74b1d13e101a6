"""Run under torchrun by tests/test_distributed.py: evaluate a checkpoint with every process predicting its shard."""
from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from bench import checkpoint, data, settings
from bench.evaluation.trained import evaluate_model, trained_detector
from bench.layout import ResultFiles, RunLayout


def main(run_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo")
    cfg = settings.build(file=Path(run_dir) / "config.yaml")
    source = data.make_synthetic(cfg.profile.synthetic, cfg.cache_dir)
    split = data.load_split(source.val_ann, source.val_images, None, strict=False, keep_data=dist.get_rank() == 0)
    val_set = data.CocoDetection(split.index, split.image_dir, split.ann_path, train=False)
    state = checkpoint.load(RunLayout(Path(run_dir)).result("resnet50", 0).checkpoint)
    model = trained_detector(cfg, "resnet50", val_set.num_classes, state)
    coco_gt = data.ground_truth(split.data) if dist.get_rank() == 0 else None
    Path(out_dir).mkdir(exist_ok=True)
    scores = evaluate_model(model, val_set, coco_gt, ResultFiles(Path(out_dir)), model.roi_heads.box_predictor.cls_score.weight.device,
                            batch_size=1, progress=False)
    assert (scores is None) == (dist.get_rank() != 0)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
