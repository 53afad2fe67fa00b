"""SocioSeg data: loading and validation, derived targets, the toy-city generator."""

from socioreasoner.data.loader import (
           LEVELS,
           SOCIOSEG_HUB_ID,
           SocioSegDataError,
           load_socioseg,
           normalize_level,
           skipped_invalid,
)
from socioreasoner.data.targets import mask_to_array, mask_to_boxes

__all__ = ["LEVELS", "SOCIOSEG_HUB_ID", "SocioSegDataError", "load_socioseg", "mask_to_array", "mask_to_boxes",
           "normalize_level", "skipped_invalid"]
