"""An example dsim plugin: a dataset card and a measure, using only dsim's public API."""

from __future__ import annotations

import numpy as np

import dsim


@dsim.hookimpl
def dsim_register_cards():
    return [
        dsim.DatasetCard(
            name="usps-example",
            title="USPS handwritten digits (example plugin card)",
            aliases=("usps-demo",),
            origin="natural",
            modality="handwritten digits",
            channels=1,
            num_classes=10,
            size=11000,
            image_size="16x16",
            expert={
                "origin": "natural",
                "colour": "grey",
                "content": "objects",
                "subject": "digits",
                "diversity": "low",
                "classes": "few",
            },
            loader="npz",
            loader_args={"file": "usps_16x16.npz"},
            licence="research use",
        )
    ]


class IntensityHistogram(dsim.Measure):
    """Total-variation distance between the grey-level histograms of two datasets (0..1)."""

    name = "intensity-histogram"
    description = "total-variation distance between grey-level histograms"
    kind = "distance"
    needs = "images"

    def __init__(self, bins: int = 32):  # a parameter: `dsim rank -o bins=16` sets it
        self.bins = bins

    def config(self, ctx):
        return {"bins": int(self.bins)}

    def represent(self, data, ctx):
        bins = self.config(ctx)["bins"]
        x = data.images.astype(np.float64)
        if data.images.dtype == np.uint8:
            x = x / 255.0
        grey = x.mean(axis=-1).ravel()
        hist, _ = np.histogram(np.clip(grey, 0, 1), bins=bins, range=(0.0, 1.0))
        return self.representation(data, ctx, arrays={"hist": hist / max(1, hist.sum())})

    def compare(self, source, target, ctx):
        return float(0.5 * np.abs(source.arrays["hist"] - target.arrays["hist"]).sum())


@dsim.hookimpl
def dsim_register_measures():
    return [IntensityHistogram()]
