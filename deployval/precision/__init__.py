"""Precision analysis: activation ranges against fp16/bf16 limits, int8 calibration data, layer
sensitivity and weight fake-quantization. Modules import torch and numpy only when used."""
