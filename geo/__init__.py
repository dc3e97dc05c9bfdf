"""Pure spatial functions of gridwatch: no database, no web.

Everything takes and returns GeoDataFrames or numpy arrays; metres are
computed in a local projected CRS (:func:`local_metric_crs`).
"""

from gridwatch.geo.border import segment_line
from gridwatch.geo.crs import WGS84, local_metric_crs, require_crs, to_metric
from gridwatch.geo.grid_fusion import FusionError, FusionReport, FusionResult, fuse_grids
from gridwatch.geo.h3cells import cell_polygons, cells_for_points
from gridwatch.geo.routing import RoadGraph, build_road_graph, rank_units
from gridwatch.geo.topology import TopologyError, Violation, assert_tiling, balance, check_tiling
from gridwatch.geo.tracks import haversine_m, too_fast

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
    "RoadGraph",
    "build_road_graph",
    "rank_units",
    "haversine_m",
    "too_fast",
]
