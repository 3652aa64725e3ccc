"""Precision analyses that sit on top of a compare run: layer sensitivity (which layers to keep in
higher precision), weight fake-quantization sweeps, the lowerings they try, the minimal set search and
synthetic calibration data. The range statistics live in judge/, torch mixed precision in export/.
Modules import torch and numpy only when used."""
