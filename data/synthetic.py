"""A synthetic square prefecture made in SQL, for the tile benchmark and the tests.

Every table the map reads gets rows, all built set-based from
``generate_series``: ``c`` x ``c`` counties (2 x 2 for a prefecture) of ``t`` x ``t``
townships, each of ``k`` x ``k`` grids and two stations; the border runs along the
north and east edges. Units are spread over the stations; posts and checkpoints
stand still (their last ten minutes are one point), the others move along their
heading. Times are relative to ``now()`` so the data is fresh when it is made.

``province`` is DESIGN.md's province: 10 x 10 counties, 1,600 townships,
102,400 grids, 20,000 units with a ten-minute trail each (~220k positions).
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

__all__ = ["Region", "REGIONS", "make_region"]


@dataclass(frozen=True)
class Region:
    """Sizes of a synthetic region."""

    townships_per_side: int  # per county
    grids_per_side: int  # per township
    units: int
    cell_deg: float = 0.02
    counties_per_side: int = 2

    @property
    def cells_per_side(self) -> int:
        return self.counties_per_side * self.townships_per_side * self.grids_per_side

    @property
    def grids(self) -> int:
        return self.cells_per_side ** 2


REGIONS = {
    "small": Region(1, 3, 12, cell_deg=0.05),
    "prefecture": Region(3, 7, 200),
    "province": Region(4, 8, 20_000, counties_per_side=10),
}

_STATEMENTS = (
    # the four command levels
    """INSERT INTO command_unit (level, parent_id, code, name, name_en, geom)
       VALUES ('prefecture', NULL, 'P1', '边城地区', 'Biancheng Prefecture',
               ST_Multi(ST_MakeEnvelope(:lon0, :lat0, :lon0 + :w, :lat0 + :w, 4326)))""",
    """INSERT INTO command_unit (level, parent_id, code, name, name_en, geom)
       SELECT 'county', p.id, 'C' || (i * :c + j + 1),
              coalesce((ARRAY['青岭县', '白河县', '南屏县', '北源县'])[i * :c + j + 1], '第' || (i * :c + j + 1) || '县'),
              coalesce((ARRAY['Qingling', 'Baihe', 'Nanping', 'Beiyuan'])[i * :c + j + 1], 'No. ' || (i * :c + j + 1))
                  || ' County',
              ST_Multi(ST_MakeEnvelope(:lon0 + i * :w / :c, :lat0 + j * :w / :c,
                                       :lon0 + (i + 1) * :w / :c, :lat0 + (j + 1) * :w / :c, 4326))
       FROM command_unit p, generate_series(0, :c - 1) i, generate_series(0, :c - 1) j WHERE p.level = 'prefecture'""",
    """INSERT INTO command_unit (level, parent_id, code, name, name_en, geom)
       SELECT 'township', c.id, c.code || '-T' || (a * :t + b + 1), left(c.name, -1) || (a * :t + b + 1) || '镇',
              replace(c.name_en, ' County', '') || ' Town ' || (a * :t + b + 1),
              ST_Multi(ST_MakeEnvelope(ST_XMin(c.geom) + a * :tw, ST_YMin(c.geom) + b * :tw,
                                       ST_XMin(c.geom) + (a + 1) * :tw, ST_YMin(c.geom) + (b + 1) * :tw, 4326))
       FROM command_unit c, generate_series(0, :t - 1) a, generate_series(0, :t - 1) b WHERE c.level = 'county'""",
    """INSERT INTO command_unit (level, parent_id, code, name, name_en, geom)
       SELECT 'station', t.id, t.code || '-S' || (h + 1), left(t.name, -1) || (ARRAY['西', '东'])[h + 1] || '派出所',
              t.name_en || (ARRAY[' West', ' East'])[h + 1] || ' Station',
              ST_Multi(ST_MakeEnvelope(ST_XMin(t.geom) + h * :tw / 2, ST_YMin(t.geom),
                                       ST_XMin(t.geom) + (h + 1) * :tw / 2, ST_YMax(t.geom), 4326))
       FROM command_unit t, generate_series(0, 1) h WHERE t.level = 'township'""",
    # grids, most with a coverage row
    """INSERT INTO grid (code, name, township_id, households, population, workers, geom)
       SELECT t.code || '-G' || (a * :k + b + 1), t.name || (a * :k + b + 1) || '网格', t.id,
              300 + (a * 37 + b * 11) % 200, 900 + (a * 97 + b * 31) % 600, 1 + (a + b) % 3,
              ST_Multi(ST_MakeEnvelope(ST_XMin(t.geom) + a * :cell, ST_YMin(t.geom) + b * :cell,
                                       ST_XMin(t.geom) + (a + 1) * :cell, ST_YMin(t.geom) + (b + 1) * :cell, 4326))
       FROM command_unit t, generate_series(0, :k - 1) a, generate_series(0, :k - 1) b
       WHERE t.level = 'township'""",
    """INSERT INTO grid_coverage (grid_id, last_visit, visits_24h, limit_h, status)
       SELECT id, now() - make_interval(hours => id % 30), id % 5, 24,
              (ARRAY['fresh', 'fresh', 'fresh', 'due', 'due', 'overdue'])[id % 6 + 1]
       FROM grid WHERE id % 10 <> 9""",
    # border, defence lines, segments
    """INSERT INTO defence_line (line_no, name, geom)
       SELECT n, (ARRAY['封控线', '查控线', '过滤线'])[n],
              ST_SetSRID(ST_Multi(CASE n
                  WHEN 1 THEN ST_MakeLine(ARRAY[ST_MakePoint(:lon0, :lat0 + :w), ST_MakePoint(:lon0 + :w, :lat0 + :w),
                                                ST_MakePoint(:lon0 + :w, :lat0)])
                  WHEN 2 THEN ST_MakeLine(ARRAY[ST_MakePoint(:lon0, :lat0 + :w * 0.88),
                                                ST_MakePoint(:lon0 + :w * 0.88, :lat0 + :w * 0.88),
                                                ST_MakePoint(:lon0 + :w * 0.88, :lat0)])
                  ELSE ST_ExteriorRing(ST_Buffer(ST_MakePoint(:lon0 + :w * 0.42, :lat0 + :w * 0.42)::geography,
                                                 :w * 111000 * 0.18, 'quad_segs=24')::geometry) END), 4326)
       FROM generate_series(1, 3) n""",
    """INSERT INTO border_segment (km_from, km_to, geom)
       SELECT i * b.len / b.n / 1000, (i + 1) * b.len / b.n / 1000,
              ST_LineSubstring(b.line, i::float8 / b.n, (i + 1)::float8 / b.n)
       FROM (SELECT ST_LineMerge(geom) AS line, ST_Length(geom::geography) AS len,
                    ceil(ST_Length(geom::geography) / 1000)::int AS n
             FROM defence_line WHERE line_no = 1) b, generate_series(0, b.n - 1) i""",
    """INSERT INTO segment_coverage (segment_id, last_visit, watched, limit_h, status)
       SELECT id, now() - make_interval(mins => id * 7 % 400), id % 5 = 3, 4,
              (ARRAY['patrolled', 'patrolled', 'patrolled', 'watched', 'overdue'])[id % 5 + 1]
       FROM border_segment WHERE id % 7 <> 6""",
    # roads and rivers
    """INSERT INTO road (code, class, name, geom)
       SELECT 'R' || row_number() OVER (), class, name, ST_Multi(ST_SetSRID(line, 4326)) FROM (
           SELECT 'trunk' AS class, 'G' || (f * 10)::int || '国道' AS name,
                  ST_MakeLine(ST_MakePoint(:lon0 + :w * 0.42, :lat0 + :w * 0.42),
                              CASE WHEN e = 0 THEN ST_MakePoint(:lon0 + :w * f, :lat0 + :w)
                                   ELSE ST_MakePoint(:lon0 + :w, :lat0 + :w * f) END) AS line
           FROM unnest(ARRAY[0.2, 0.55, 0.85]) f, generate_series(0, 1) e
           UNION ALL
           SELECT 'secondary', 'S' || (f * 100)::int || '省道',
                  CASE WHEN e = 0 THEN ST_MakeLine(ST_MakePoint(:lon0, :lat0 + :w * f), ST_MakePoint(:lon0 + :w, :lat0 + :w * f))
                       ELSE ST_MakeLine(ST_MakePoint(:lon0 + :w * f, :lat0), ST_MakePoint(:lon0 + :w * f, :lat0 + :w)) END
           FROM unnest(ARRAY[0.3, 0.65]) f, generate_series(0, 1) e
           UNION ALL
           SELECT 'patrol', '边境巡逻路', ST_MakeLine(ARRAY[ST_MakePoint(:lon0, :lat0 + :w - 0.01),
                  ST_MakePoint(:lon0 + :w - 0.01, :lat0 + :w - 0.01), ST_MakePoint(:lon0 + :w - 0.01, :lat0)])
           UNION ALL
           SELECT 'track', '便道', ST_MakeLine(ST_MakePoint(:lon0 + :w * f, :lat0 + :w * 0.7),
                                              ST_MakePoint(:lon0 + :w * (f + 0.08), :lat0 + :w - 0.02))
           FROM unnest(ARRAY[0.1, 0.4, 0.7]) f
       ) r""",
    """INSERT INTO river (name, geom)
       SELECT '界河', ST_Multi(ST_SetSRID(ST_MakeLine(ARRAY(
           SELECT ST_MakePoint(:lon0 + :w * i / 60.0, :lat0 + :w * (0.5 + 0.08 * sin(i / 6.0)))
           FROM generate_series(0, 60) i ORDER BY i)), 4326))""",
    # checkpoints where roads cross the lines (line 1: ports at the border)
    """INSERT INTO checkpoint (code, line_no, name, kind, staffed, geom)
       SELECT 'CP' || lpad((row_number() OVER (ORDER BY l.line_no, ST_X(p.geom), ST_Y(p.geom)))::text, 3, '0'),
              l.line_no, '第' || l.line_no || '道防线检查站',
              CASE WHEN l.line_no = 1 THEN 'port' ELSE 'road_checkpoint' END,
              (row_number() OVER (ORDER BY l.line_no, ST_X(p.geom), ST_Y(p.geom))) % 4 <> 0, p.geom
       FROM defence_line l JOIN road r ON r.class IN ('trunk', 'secondary') AND ST_Intersects(l.geom, r.geom),
            ST_Dump(ST_Intersection(l.geom, r.geom)) p
       WHERE GeometryType(p.geom) = 'POINT'""",
    # zones
    """INSERT INTO zone (kind, name, geom)
       SELECT 'border_closed', '边境管控带', ST_Multi(ST_Intersection(p.geom,
              ST_Buffer(l.geom::geography, 3000)::geometry))
       FROM command_unit p, defence_line l WHERE p.level = 'prefecture' AND l.line_no = 1
       UNION ALL
       SELECT 'port_control', c.name || '口岸', ST_Multi(ST_Intersection(p.geom,
              ST_Buffer(c.geom::geography, 2500)::geometry))
       FROM command_unit p, checkpoint c WHERE p.level = 'prefecture' AND c.line_no = 1""",
    """INSERT INTO zone (kind, name, geom)
       SELECT 'social_surface', '社会面', ST_Multi(ST_CollectionExtract(ST_Difference(p.geom, z.geom), 3))
       FROM command_unit p, (SELECT ST_Union(geom) AS geom FROM zone) z WHERE p.level = 'prefecture'""",
    # settlements: seats, towns, villages
    """INSERT INTO settlement (code, name, name_en, kind, households, population, geom)
       SELECT 'ST-' || cu.code, CASE cu.level WHEN 'county' THEN left(cu.name, -1) || '城' ELSE cu.name END,
              CASE cu.level WHEN 'county' THEN replace(cu.name_en, ' County', ' City') ELSE cu.name_en END,
              CASE cu.level WHEN 'county' THEN 'seat' ELSE 'town' END, 3000, 10000,
              ST_PointOnSurface(cu.geom)
       FROM command_unit cu WHERE cu.level IN ('county', 'township')
       UNION ALL
       SELECT 'SV-' || g.code, left(g.name, 2) || g.id || '村', 'Village ' || g.id, 'village', g.households,
              g.population, ST_Centroid(g.geom)
       FROM grid g WHERE g.id % 9 = 4""",
    # sensors along the border, cameras looking out
    """INSERT INTO sensor (code, kind, range_m, fov_deg, azimuth_deg, up, geom)
       SELECT 'SN' || i, CASE WHEN i % 2 = 0 THEN 'camera' ELSE 'radar' END,
              CASE WHEN i % 2 = 0 THEN 2500 ELSE 5000 END,
              CASE WHEN i % 2 = 0 THEN 90 END,
              CASE WHEN i % 2 = 0 THEN CASE WHEN f < 0.5 THEN 0 ELSE 90 END END,
              i % 6 <> 5, ST_LineInterpolatePoint(ST_LineMerge(l.geom), f)
       FROM defence_line l, generate_series(1, :sensors) i, LATERAL (SELECT i::float8 / (:sensors + 1) AS f) x
       WHERE l.line_no = 1""",
    # hex coverage along the border (hexagons standing in for H3 cells)
    """INSERT INTO hex_coverage (h3, last_visit, visits_24h, limit_h, status, geom)
       SELECT row_number() OVER (), now() - make_interval(mins => (h.i * 7 + h.j * 3) % 500), (h.i + h.j) % 4, 4,
              (ARRAY['fresh', 'fresh', 'due', 'overdue'])[abs(h.i + h.j) % 4 + 1],
              ST_Transform(h.geom, 4326)
       FROM command_unit p, defence_line l, (
           -- the hexagons near each border kilometre (not over the border's whole bounding box)
           SELECT DISTINCT ON (h.i, h.j) h.i, h.j, h.geom
           FROM border_segment s,
                ST_HexagonGrid(900, ST_Transform(ST_Buffer(s.geom::geography, 4000)::geometry, 3857)) h
       ) h
       WHERE p.level = 'prefecture' AND l.line_no = 1
         AND ST_DWithin(ST_Transform(h.geom, 4326)::geography, l.geom::geography, 4000)
         AND ST_Within(ST_Centroid(ST_Transform(h.geom, 4326)), p.geom)""",
    # units at their stations, the latest fix and a ten-minute trail
    """INSERT INTO unit (callsign, kind, command_unit_id, status)
       SELECT 'BP-' || lpad(i::text, greatest(4, length(i::text)), '0'), (ARRAY['foot', 'vehicle', 'drone', 'post', 'checkpoint'])[i % 5 + 1],
              s.id, CASE WHEN i % 11 = 0 THEN 'off_duty' WHEN i % 7 = 0 THEN 'responding' ELSE 'on_duty' END
       FROM generate_series(1, :units) i
       JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM command_unit WHERE level = 'station') s
         ON s.n = i % (SELECT count(*) FROM command_unit WHERE level = 'station')""",
    """SELECT ensure_position_partitions(now() - interval '2 hours', now())""",
    """INSERT INTO unit_latest (unit_id, ts, geom, speed, heading, accuracy, source)
       SELECT u.id, now() - make_interval(secs => CASE WHEN u.id % 13 = 0 THEN 3600 ELSE u.id % 30 END),
              ST_SetSRID(ST_MakePoint(
                  ST_XMin(c.geom) + (ST_XMax(c.geom) - ST_XMin(c.geom)) * (0.15 + 0.7 * abs(sin(u.id * 12.9898))),
                  ST_YMin(c.geom) + (ST_YMax(c.geom) - ST_YMin(c.geom)) * (0.15 + 0.7 * abs(sin(u.id * 78.233)))), 4326),
              CASE WHEN u.kind IN ('post', 'checkpoint') THEN 0 ELSE 2.5 END,
              CASE WHEN u.kind NOT IN ('post', 'checkpoint') THEN (u.id * 37) % 360 END, 10, 'synthetic'
       FROM unit u JOIN command_unit c ON c.id = u.command_unit_id""",
    """INSERT INTO position (unit_id, ts, geom, speed, heading, accuracy, source)
       SELECT l.unit_id, l.ts - make_interval(secs => 60 * j),
              ST_Translate(l.geom, -0.0015 * j * sin(radians(coalesce(l.heading, 0))) * sign(l.speed),
                           -0.0015 * j * cos(radians(coalesce(l.heading, 0))) * sign(l.speed)),
              l.speed, l.heading, l.accuracy, l.source
       FROM unit_latest l, generate_series(0, 10) j""",
    # incidents over the last hours
    """INSERT INTO incident (source_id, kind, severity, status, reported_at, closed_at, note, geom)
       SELECT 'INC-' || i, (ARRAY['border_crossing', 'intrusion_alarm', 'traffic', 'dispute', 'fire'])[i % 5 + 1],
              i % 4 + 1, (ARRAY['reported', 'dispatched', 'on_scene', 'closed'])[i % 4 + 1],
              now() - make_interval(mins => i * 9), CASE WHEN i % 4 = 3 THEN now() - make_interval(mins => i * 4) END,
              NULL, ST_SetSRID(ST_MakePoint(:lon0 + :w * abs(sin(i * 3.1)), :lat0 + :w * abs(sin(i * 7.7))), 4326)
       FROM generate_series(1, :incidents) i""",
)


def make_region(engine: sa.Engine, region: Region, *, lon0: float = 98.0, lat0: float = 23.5) -> None:
    """Fill the (empty) map tables with a synthetic region of the given size."""
    cells = region.cells_per_side
    params = {
        "lon0": lon0, "lat0": lat0, "w": cells * region.cell_deg, "c": region.counties_per_side,
        "t": region.townships_per_side,
        "k": region.grids_per_side, "tw": region.grids_per_side * region.cell_deg, "cell": region.cell_deg,
        "units": region.units, "sensors": max(4, cells // 2), "incidents": max(12, region.units // 4),
    }
    with engine.begin() as conn:
        for statement in _STATEMENTS:
            conn.execute(sa.text(statement), params)
