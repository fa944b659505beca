"""Exceptions and warnings raised by geot2e.

Every error a user can trigger is a subclass of :class:`Geot2eError`. Messages say
what was wrong *and* what to do about it.
"""
from __future__ import annotations

__all__ = [
    "Geot2eError",
    "MissingCRSError",
    "GridMismatchError",
    "EmptyMaskError",
    "EmptyRasterError",
    "NodataError",
    "DimensionError",
    "BandCountError",
    "BandRoleError",
    "TileSizeError",
    "ParameterError",
    "GeometryCRSError",
    "CheckpointError",
    "OutputExistsError",
    "OutputPathError",
    "ZarrStoreMismatchError",
    "DataFetchError",
    "Geot2eWarning",
    "GSDRangeWarning",
    "NoOverlapWarning",
    "PromptTruncatedWarning",
    "IncompleteStoreError",
    "IncompleteStoreWarning",
    "MaskValueError",
    "MaskValueWarning",
    "SizeLimitError",
    "DeviceError",
]


class Geot2eError(Exception):
    """Root of all geot2e errors."""


class MissingCRSError(Geot2eError, ValueError):
    """The raster (or geometry) has no CRS where one is needed."""


class GridMismatchError(Geot2eError, ValueError):
    """Two arrays that must share a pixel grid do not."""


class EmptyMaskError(Geot2eError, ValueError):
    """The mask selects no pixel to synthesize."""


class EmptyRasterError(Geot2eError, ValueError):
    """The raster has no pixels (a zero-sized dimension)."""


class NodataError(Geot2eError, ValueError):
    """The raster has no valid pixel to use as context or to scale from."""


class DimensionError(Geot2eError, ValueError):
    """The array's dimensions are not (band, y, x), (y, x) or (..., band, y, x)."""


class BandCountError(Geot2eError, ValueError):
    """The raster's band count does not match the model's."""


class BandRoleError(Geot2eError, ValueError):
    """A band's role (red, nir, ...) is unknown, repeated, or not one the model can fill."""


class TileSizeError(Geot2eError, ValueError):
    """``tile``/``overlap`` are not valid for the model (multiples of its VAE factor)."""


class ParameterError(Geot2eError, ValueError):
    """An option is out of its valid range (guidance < 0, steps < 1, ...)."""


class GeometryCRSError(Geot2eError, ValueError):
    """Geometries carry no CRS while the raster has one, or cannot be reprojected."""


class CheckpointError(Geot2eError, OSError):
    """A model checkpoint is missing, corrupt, unsafe (pickle) or mismatched."""


class OutputExistsError(Geot2eError, FileExistsError):
    """The output path exists and ``overwrite=True`` was not given."""


class OutputPathError(Geot2eError, OSError):
    """The output directory is missing or not writable."""


class ZarrStoreMismatchError(Geot2eError, ValueError):
    """An existing Zarr store belongs to another grid, CRS or band layout."""


class DataFetchError(Geot2eError, OSError):
    """Sample data could not be fetched or failed its checksum."""


class Geot2eWarning(UserWarning):
    """Root of geot2e warnings."""


class GSDRangeWarning(Geot2eWarning):
    """The GSD lies outside the range the model was trained on (by more than
    ``geot2e.api.GSD_RANGE_SLACK``, 2 %: a nominal 15 m against 15.006 m on the ground is inside)."""


class NoOverlapWarning(Geot2eWarning):
    """Geometries do not overlap the raster: the mask is all False."""


class PromptTruncatedWarning(Geot2eWarning):
    """A prompt was longer than the text encoder's context and was truncated."""


class IncompleteStoreError(Geot2eError, ValueError):
    """A Zarr store given as input is unfinished: its ledger lists blocks never written."""


class IncompleteStoreWarning(Geot2eWarning):
    """An unfinished Zarr store was opened: blocks its ledger does not list hold nodata."""


class MaskValueError(ParameterError):
    """A numeric mask holds NaN: whether those pixels are to be synthesized is ambiguous."""


class MaskValueWarning(Geot2eWarning):
    """A numeric mask holds values other than 0 and 1 (read as: nonzero = synthesize)."""


class SizeLimitError(ParameterError):
    """A size-like option (steps, samples, pixels to add or generate) is beyond its upper bound,
    or the run would need more memory than allowed."""


class DeviceError(Geot2eError, ValueError):
    """The ``device=`` string names no device torch knows, or one this machine does not have."""


class VocabularyWarning(Geot2eWarning):
    """A prompt uses words that never occurred in the captions the model was trained on."""
