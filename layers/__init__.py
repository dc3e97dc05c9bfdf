"""The map layers and the read queries of the dashboard."""
from gridwatch.layers.catalog import CATALOG, Layer, UnknownLayerError, available_layers, get_layer
from gridwatch.layers.style import build_style
from gridwatch.layers.tiles import TileNotFound, tile

__all__ = ["CATALOG", "Layer", "UnknownLayerError", "available_layers", "get_layer", "build_style",
           "TileNotFound", "tile"]
