"""Datasets: loading image sets through the loader plugins, tensors."""
