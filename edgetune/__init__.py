"""edgetune: adapt, compress and deploy small audio recognisers on edge devices."""

__version__ = "0.1.0"
