"""A detector's evaluation: one prediction pass over the validation set, read by evaluators.

`evaluator` holds the protocol and the runner (detectron2's `DatasetEvaluator` and
`inference_on_dataset`), `coco` the COCO results and pycocotools' scores, `evaluators` what
the pass computes (box scores, per-image matches for the bootstrap, error breakdown, proposal
recall and RoI levels), `trained` a trained detector's pass into its run folder.
"""
