"""Measuring models: evaluation data and runners, evaluate, reports and plots, per-layer quantization debugging."""
