"""ImageNet-style classification pretraining for the detection backbones (`python -m bench.pretrain`).

`config` holds the recipes (profiles), `data` the images and their batches, `loop` one
backbone's training on timm's components, `provenance` the weights handed to `bench.run`.
"""
