"""Datasets of ftcal_jax. Importing this package registers the TFDS builders."""

from ftcal_jax.datasets.glyphs import Glyphs
from ftcal_jax.datasets.glyphs import GlyphsConfig
from ftcal_jax.datasets.glyphs import load_glyphs_arrays
