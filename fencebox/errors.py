"""The exceptions FenceBox raises on bad input, each a ``ValueError`` with a message a user can act on."""

from __future__ import annotations


class FenceboxError(ValueError):
    """Base class of every error FenceBox raises for bad input or configuration."""


class SpecError(FenceboxError):
    """A chain spec (dict, file or compact string) names an unknown transform, a bad value or bad syntax."""


class InputError(FenceboxError):
    """An image or batch handed to a transform is not what the transform accepts (dtype, shape, size)."""


class DataError(FenceboxError):
    """A data-set reference or file cannot be loaded."""


class ModelError(FenceboxError):
    """A model reference or file cannot be loaded, or is refused as unsafe."""


class ConfigError(FenceboxError):
    """A configuration file, setting or command-line argument is invalid (not the image: the set-up)."""


class Cancelled(FenceboxError):
    """Work was stopped because the request it served passed its deadline or was abandoned."""
