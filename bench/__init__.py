"""detbench: train, evaluate, measure and report detectors on interchangeable backbones."""
