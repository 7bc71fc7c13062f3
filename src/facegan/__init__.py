"""facegan: a folder of face photos or drawings -> a trained face generator, reproducibly."""

__version__ = "0.1.0"
