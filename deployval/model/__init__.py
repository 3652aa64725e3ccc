"""The model and what it is fed: its spec and run settings, how it is loaded and digested, its inputs,
datasets, preprocessing, labels, calibration data and shape grids. Imports nothing above the root."""
