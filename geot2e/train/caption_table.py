"""Caption tables: image footprints (any CRS) → text, for captioning training windows.

A caption table is a vector file with one geometry and one caption per row: GeoParquet,
GeoPackage / GeoJSON / Shapefile / FlatGeobuf (anything pyogrio reads), or CSV / plain
Parquet with a WKT (or WKB) geometry column. :class:`~geot2e.train.TileDataset` asks it
for the caption of each window: the window's footprint in its source's CRS is intersected
with the table's geometries (reprojected once per CRS) and the geometry with the largest
overlap gives the caption; windows that meet none fall back to the automatic captioner.

>>> table = CaptionTable.from_file("captions.gpkg")                     # doctest: +SKIP
>>> ds = TileDataset(sources, caption_table=table)                     # doctest: +SKIP
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import GeometryCRSError, ParameterError

__all__ = ["CaptionTable", "window_footprint"]

_GEOMETRY_COLUMNS = ("geometry", "wkt", "WKT", "geom", "footprint", "the_geom", "wkb", "WKB")
_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".zip")


def _crs(crs: Any):
    import pyproj

    try:
        return pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as e:
        raise GeometryCRSError(f"cannot interpret CRS {crs!r} ({e}); pass an EPSG code such as 'EPSG:4326'.") from e


def window_footprint(transform, y: int, x: int, h: int, w: int):
    """The polygon covered by pixel rows ``y:y+h`` and columns ``x:x+w`` under an affine
    ``transform`` (pixel → CRS), exact for rotated grids too."""
    from shapely.geometry import Polygon

    corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    return Polygon([_apply(transform, c) for c in corners])


def _apply(transform, xy) -> tuple[float, float]:
    try:
        out = transform @ xy          # affine >= 2.4
    except TypeError:
        out = transform * xy
    return float(out[0]), float(out[1])


class CaptionTable:
    """Footprint geometries with one caption each.

    Parameters
    ----------
    geometries : sequence of shapely geometries (polygons usually; points and lines work too).
    captions : one string per geometry.
    crs : the CRS of the geometries (anything pyproj understands).
    min_overlap : fraction of a window's area a polygon must cover to caption it (0 = any
        positive overlap). Non-polygonal geometries caption windows they fall inside, at
        lower priority than any overlapping polygon.
    """

    def __init__(self, geometries: Sequence, captions: Sequence[str], crs: Any, *, min_overlap: float = 0.0):
        import shapely

        geoms = np.asarray(list(geometries), dtype=object)
        caps = [None if c is None else str(c).strip() for c in captions]
        if len(geoms) != len(caps):
            raise ParameterError(f"caption table: {len(geoms)} geometries for {len(caps)} captions.")
        if crs is None:
            raise GeometryCRSError("caption table geometries carry no CRS; pass crs= (e.g. 'EPSG:4326').")
        if not 0.0 <= float(min_overlap) <= 1.0:
            raise ParameterError(f"min_overlap must lie in [0, 1], got {min_overlap!r}.")
        keep = np.array([g is not None and not shapely.is_empty(g) and bool(c) for g, c in zip(geoms, caps)], bool)
        self.geometries = geoms[keep]
        self.captions = [c for c, k in zip(caps, keep) if k]
        self.crs = _crs(crs)
        self.min_overlap = float(min_overlap)
        self._cache: dict[str, tuple[np.ndarray, Any]] = {}

    def __len__(self) -> int:
        return len(self.captions)

    def __repr__(self) -> str:
        return f"CaptionTable({len(self)} captions, crs={self.crs.to_string()!r})"

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_file(cls, path: str | os.PathLike, *, caption_column: str = "caption",
                  geometry_column: str | None = None, crs: Any = None, layer: str | None = None,
                  min_overlap: float = 0.0) -> "CaptionTable":
        """Read a caption table.

        Parameters
        ----------
        path : GeoParquet (``.parquet``/``.geoparquet``), a vector file pyogrio reads
            (``.gpkg``, ``.geojson``, ``.shp``, ``.fgb`` ...), or ``.csv``/``.tsv`` (or a Parquet
            file without geo metadata) with a WKT/WKB geometry column.
        caption_column : column holding the text.
        geometry_column : column holding WKT/WKB (CSV / plain Parquet); found automatically
            among ``geometry, wkt, geom, footprint, wkb`` when not given.
        crs : CRS of the geometries when the file carries none (CSV); if the file has a CRS
            and ``crs`` differs, a :class:`~geot2e.errors.ParameterError` is raised.
        layer : layer name for multi-layer files (GeoPackage).
        min_overlap : see :class:`CaptionTable`.
        """
        import pandas as pd

        p = Path(path).expanduser()
        if not p.is_file():
            raise ParameterError(f"caption table {p} not found.")
        suffix = p.suffix.lower()
        file_crs = None
        if suffix in (".parquet", ".geoparquet", ".pq"):
            import pyarrow.parquet as pq

            meta = pq.read_schema(p).metadata or {}
            if b"geo" in meta:
                import geopandas as gpd

                gdf = gpd.read_parquet(p)
                df, geoms, file_crs = gdf, np.asarray(gdf.geometry.values, dtype=object), gdf.crs
            else:
                df = pd.read_parquet(p)
                geoms = _parse_geometries(df, geometry_column, p)
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
            geoms = _parse_geometries(df, geometry_column, p)
            if crs is None and "crs" in df.columns and df["crs"].nunique() == 1:
                crs = df["crs"].iloc[0]
        else:
            import geopandas as gpd

            kw = {"layer": layer} if layer is not None else {}
            gdf = gpd.read_file(p, **kw)
            df, geoms, file_crs = gdf, np.asarray(gdf.geometry.values, dtype=object), gdf.crs
        if caption_column not in df.columns:
            raise ParameterError(f"{p}: no column {caption_column!r}; columns are {list(df.columns)}. "
                                 "Pass caption_column= to name the text column.")
        if file_crs is not None and crs is not None and _crs(crs) != _crs(file_crs):
            raise ParameterError(f"{p} carries CRS {_crs(file_crs).to_string()} but crs={crs!r} was given; "
                                 "drop crs= (it is only for files without a CRS, such as CSV).")
        the_crs = file_crs if file_crs is not None else crs
        if the_crs is None:
            raise GeometryCRSError(f"{p}: the geometries carry no CRS; pass crs= (e.g. crs='EPSG:4326' for lon/lat WKT).")
        caps = [None if (c is None or (isinstance(c, float) and np.isnan(c))) else c for c in df[caption_column]]
        return cls(geoms, caps, the_crs, min_overlap=min_overlap)

    # ------------------------------------------------------------------ queries
    def _in_crs(self, crs: Any):
        import shapely
        from shapely.strtree import STRtree

        target = _crs(crs)
        key = target.to_wkt()
        if key not in self._cache:
            geoms = self.geometries
            if target != self.crs:
                import geopandas as gpd

                geoms = np.asarray(gpd.GeoSeries(list(geoms), crs=self.crs).to_crs(target).values, dtype=object)
            geoms = np.asarray([shapely.make_valid(g) if not g.is_valid else g for g in geoms], dtype=object)
            self._cache[key] = (geoms, STRtree(geoms))
        return self._cache[key]

    def lookup(self, footprint, crs: Any) -> str | None:
        """Caption of the geometry that overlaps ``footprint`` (a shapely polygon in ``crs``)
        the most, or None when none does."""
        if len(self) == 0:
            return None
        geoms, tree = self._in_crs(crs)
        area = footprint.area
        best, best_score = None, -1.0
        for i in tree.query(footprint, predicate="intersects"):
            g = geoms[i]
            if g.geom_type in ("Polygon", "MultiPolygon", "GeometryCollection") and g.area > 0:
                frac = footprint.intersection(g).area / area if area > 0 else 0.0
                if frac <= 0 or frac < self.min_overlap:
                    continue
                score = 1.0 + frac            # any overlapping polygon beats points/lines
            else:
                if not footprint.intersects(g):
                    continue
                score = 0.5
            if score > best_score:
                best, best_score = int(i), score
        return None if best is None else self.captions[best]

    def caption_for_window(self, transform, crs: Any, y: int, x: int, h: int, w: int | None = None) -> str | None:
        """Caption of the pixel window ``(y, x, h, w)`` of a raster with ``transform``/``crs``."""
        return self.lookup(window_footprint(transform, y, x, h, h if w is None else w), crs)


def _parse_geometries(df, geometry_column: str | None, path: Path) -> np.ndarray:
    import shapely

    col = geometry_column
    if col is None:
        col = next((c for c in _GEOMETRY_COLUMNS if c in df.columns), None)
    if col is None or col not in df.columns:
        raise ParameterError(f"{path}: no geometry column found (looked for {geometry_column or _GEOMETRY_COLUMNS}); "
                             f"columns are {list(df.columns)}. Pass geometry_column=.")
    vals = df[col].tolist()
    out = []
    for v in vals:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
        elif isinstance(v, (bytes, bytearray, memoryview)):
            out.append(shapely.from_wkb(bytes(v)))
        else:
            try:
                out.append(shapely.from_wkt(str(v)))
            except shapely.errors.GEOSException as e:
                raise ParameterError(f"{path}: column {col!r} holds an invalid WKT geometry {str(v)[:60]!r} ({e}).") from e
    return np.asarray(out, dtype=object)
