"""Pure spatial functions of gridwatch: no database, no web.

Everything takes and returns GeoDataFrames or numpy arrays; metres are
computed in a local projected CRS (:func:`local_metric_crs`).
"""

from geo.border import segment_line
from geo.crs import WGS84, local_metric_crs, require_crs, to_metric
from geo.grid_fusion import FusionError, FusionReport, FusionResult, fuse_grids
from geo.h3cells import cell_polygons, cells_for_points
from geo.topology import TopologyError, Violation, assert_tiling, balance, check_tiling

__all__ = [
    "WGS84",
    "local_metric_crs",
    "to_metric",
    "require_crs",
    "fuse_grids",
    "FusionResult",
    "FusionReport",
    "FusionError",
    "check_tiling",
    "assert_tiling",
    "balance",
    "Violation",
    "TopologyError",
    "segment_line",
    "cells_for_points",
    "cell_polygons",
]
