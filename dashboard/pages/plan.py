"""The grid planner: redraw a township's full-element grid with every rule checked as you edit.

``/plan?township=CODE`` (planner role). The map (MapLibre GL JS with terra-draw, ``assets/plan.js``)
shows the township's faces coloured by grid; select grids, paint faces onto a grid, split a grid by
a drawn line, reshape by a drawn polygon, merge, reassign, lock, undo and redo. After every edit
the problems panel lists every broken rule (hard ones refuse the edit) and the score sums the
draft up beside the version it started from. Save a version with a message; publish any saved
version (or an earlier one: a rollback) as the grid layer.
"""
from __future__ import annotations

import time

import dash
import flask
import pandas as pd
import psycopg
from dash import ALL, ClientsideFunction, Input, Output, State, callback, clientside_callback, ctx, dcc, html

from gridwatch.dashboard._context import DB_ERRORS, context
from gridwatch.dashboard.access import principal
from gridwatch.dashboard.plan_data import (
    COLOUR_BY,
    Draft,
    draft_for,
    draft_grids,
    drop_draft,
    export_file,
    import_upload,
    job_of,
    keep_draft,
    score_rows,
    selected_summary,
    start_proposal,
    state_of,
    township_choices,
)
from gridwatch.dashboard.wall_panels import signed_in_as
from gridwatch.errors import InputError
from gridwatch.etl.plan import publish, save_version
from gridwatch.geo import plan as edits
from gridwatch.geo.plan_rules import diff
from gridwatch.layers.plan import version_grids, versions

dash.register_page(__name__, path="/plan", title="gridwatch · plan")

# The database is away: the draft in hand is kept, and the page says so until it is back.
DATABASE_DOWN = (*DB_ERRORS, psycopg.OperationalError)
DOWN_MESSAGE = "the database cannot be reached: your draft is kept here; try again in a moment"

# The planner's map: the command units' boundaries and the base layers; not the coverage and force ones.
PLAN_STYLE = "/style.json?hide=" + ",".join(("grids", "hexes", "sensors", "incidents", "leak_routes", "checkpoints",
                                             "segments", "lines", "zones"))

TOOLS = (("select", "Select"), ("paint", "Paint"), ("paint-source", "Paint source polygon"), ("split", "Split by line"),
         ("reshape", "Reshape by polygon"))


def layout(township: str | None = None, **_: str) -> html.Div:
    """The planner page."""
    who = principal()
    try:
        choices = township_choices(context())
    except DB_ERRORS:
        choices = []
    first = township if any(c["value"] == township for c in choices) else (choices[0]["value"] if choices else None)
    return html.Div([
        html.Header([
            html.H1("Grid planner"),
            dcc.Dropdown(id="plan-township", options=choices, value=first, clearable=False, className="plan-township"),
            html.Span(id="plan-version", className="plan-version"),
            signed_in_as(who.name if who else "", "en"),
        ], className="plan-header"),
        html.Div([
            dcc.RadioItems(id="plan-tool", options=[{"label": label, "value": v} for v, label in TOOLS],
                           value="select", inline=True, className="plan-tools"),
            html.Label(["Brush (m)", dcc.Slider(id="plan-brush", min=20, max=2000, step=10, value=200,
                                                marks=None, tooltip={"placement": "bottom"})],
                       className="plan-brush"),
            html.Label(["Give to", dcc.Dropdown(id="plan-target", clearable=False)], className="plan-target"),
            html.Button("Merge", id="plan-merge"), html.Button("Lock", id="plan-lock"),
            html.Button("Unlock", id="plan-unlock"), html.Button("Undo", id="plan-undo"),
            html.Button("Redo", id="plan-redo"),
            html.Label(["Police area", dcc.Dropdown(id="plan-police-area")], className="plan-police-area"),
            html.Button("Reassign", id="plan-reassign"),
            html.Label(["Workers", dcc.Input(id="plan-workers", type="number", min=0, step=1)], className="plan-workers"),
            html.Button("Set workers", id="plan-set-workers"),
            html.Label(["Colour by", dcc.Dropdown(id="plan-colour", options=list(COLOUR_BY), value="grid",
                                                  clearable=False)], className="plan-colour"),
        ], className="plan-toolbar"),
        html.Div([
            html.Div(id="plan-map", className="plan-map", **{"data-style": PLAN_STYLE}),
            html.Aside([
                html.Div(id="plan-message", className="plan-message", role="status"),
                html.H2("Selected"), html.Div(id="plan-selected"),
                html.H2("Problems"), html.Div(id="plan-problems", className="plan-problems"),
                html.H2("Score"), html.Div(id="plan-score"),
                html.H2("Rebalance"),
                html.Div([html.Button("Propose a balanced plan", id="plan-propose"),
                          html.Button("Cancel", id="plan-cancel"),
                          html.Progress(id="plan-progress", max=1, value=0)], className="plan-rebalance"),
                html.Div(id="plan-job", role="status"),
                dcc.Interval(id="plan-job-tick", interval=500, disabled=True),
                html.H2("Versions"),
                html.Div([dcc.Input(id="plan-note", placeholder="what this version changes", maxLength=500),
                          html.Button("Save version", id="plan-save"),
                          html.Button("Discard draft", id="plan-discard")], className="plan-save"),
                html.Div(id="plan-saved", role="status"),
                html.Div(id="plan-versions"),
                html.H2("Compare"),
                html.Div([dcc.Dropdown(id="plan-diff-a", placeholder="version"), html.Span("→"),
                          dcc.Dropdown(id="plan-diff-b", placeholder="version or draft")], className="plan-pair"),
                html.Div(id="plan-diff"),
                html.H2("Files"),
                html.Div([dcc.Dropdown(id="plan-export-format", options=["gpkg", "geojson", "shp"], value="gpkg",
                                       clearable=False),
                          dcc.Dropdown(id="plan-export-crs", options=["cgcs2000", "wgs84"], value="cgcs2000",
                                       clearable=False),
                          html.Button("Export version A", id="plan-export")], className="plan-pair"),
                dcc.Download(id="plan-download"),
                dcc.Upload(html.Button("Import an edited GeoPackage or GeoJSON as the draft"), id="plan-upload",
                           multiple=False),
                html.Div(id="plan-imported", role="status"),
            ], className="plan-side"),
        ], className="plan-body"),
        dcc.Store(id="plan-state"), dcc.Store(id="plan-edit"), dcc.Store(id="plan-pick"), dcc.Store(id="plan-js"), dcc.Store(id="plan-js-tool"),
        dcc.Store(id="plan-refresh"), dcc.Store(id="plan-proposal"),
    ], className="plan-page")


def _account() -> str:
    who = principal()
    if who is None:
        raise PermissionError("nobody is signed in")
    return who.id


def _address() -> str | None:
    return flask.request.remote_addr


def _panels(draft: Draft, colour_by: str) -> tuple:
    """plan-state and the side panels for a draft."""
    state = state_of(draft, context().engine, colour_by=colour_by or "grid")
    problems = html.Ul([html.Li(p.text(), className="hard" if p.hard else "soft") for p in draft.problems[:200]]
                       or [html.Li("no problems", className="ok")])
    table = score_rows(draft)
    score = html.Table([html.Tr([html.Th(""), html.Th(f"v{draft.base_version}"), html.Th("draft")])] + [
        html.Tr([html.Td(r.measure), html.Td(_num(r.base)), html.Td(_num(r.draft))]) for r in table.itertuples()],
        className="plan-score")
    picked = selected_summary(draft)
    selected = html.Table([html.Tr([html.Th(c) for c in ["grid", *picked.columns]])] + [
        html.Tr([html.Td(code), *[html.Td(_num(v)) for v in row]]) for code, row in picked.iterrows()],
        className="plan-selected") if len(picked) else html.P("click a grid to select it")
    targets = [{"label": c, "value": c} for c in draft.plan.grids.index]
    target = draft.selected[0] if draft.selected else (targets[0]["value"] if targets else None)
    police = [{"label": c, "value": c} for c in sorted(draft.plan.faces["police_area"].dropna().unique())]
    return (state, problems, score, selected, draft.message or "", targets, target, police,
            f"draft of v{draft.base_version} · {len(draft.undo)} edit(s)")


def _num(value: object) -> str:
    if isinstance(value, bool) or value is None or (isinstance(value, float) and pd.isna(value)):
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


@callback(
    Output("plan-state", "data"), Output("plan-problems", "children"), Output("plan-score", "children"),
    Output("plan-selected", "children"), Output("plan-message", "children"), Output("plan-target", "options"),
    Output("plan-target", "value"), Output("plan-police-area", "options"), Output("plan-version", "children"),
    Input("plan-township", "value"), Input("plan-edit", "data"), Input("plan-pick", "data"),
    Input("plan-merge", "n_clicks"), Input("plan-lock", "n_clicks"), Input("plan-unlock", "n_clicks"),
    Input("plan-undo", "n_clicks"), Input("plan-redo", "n_clicks"), Input("plan-reassign", "n_clicks"),
    Input("plan-colour", "value"), Input("plan-refresh", "data"), Input("plan-proposal", "data"),
    Input("plan-set-workers", "n_clicks"),
    State("plan-police-area", "value"), State("plan-workers", "value"),
)
def act(township, edit, pick, _merge, _lock, _unlock, _undo, _redo, _reassign, colour_by, refresh, proposal,
        _set_workers, police_area, workers):
    """Every change to the draft: a map edit or pick, a toolbar button, another township or colouring."""
    if not township:
        return (dash.no_update,) * 9
    try:
        return _act(township, edit, pick, colour_by, proposal, police_area, workers)
    except DATABASE_DOWN:
        out = [dash.no_update] * 9
        out[4] = DOWN_MESSAGE
        return tuple(out)


def _act(township, edit, pick, colour_by, proposal, police_area, workers) -> tuple:
    draft = draft_for(context(), _account(), township, reload=ctx.triggered_id == "plan-refresh")
    trigger = ctx.triggered_id
    chosen = list(draft.selected)
    if trigger == "plan-edit" and edit:
        draft.run(_map_edit(edit), describe=str(edit.get("op")))
    elif trigger == "plan-pick" and pick:
        code = pick.get("code")
        if code is None:
            draft.selected = []
        elif pick.get("add"):
            draft.selected = [c for c in chosen if c != code] + ([] if code in chosen else [code])
        else:
            draft.selected = [code]
        draft.message = None
    elif trigger == "plan-merge":
        draft.run(lambda p: edits.merge(p, chosen), describe="merge")
    elif trigger in ("plan-lock", "plan-unlock"):
        draft.run(lambda p: edits.lock(p, chosen, trigger == "plan-lock"), describe="lock")
    elif trigger in ("plan-undo", "plan-redo"):
        draft.step(back=trigger == "plan-undo")
    elif trigger == "plan-proposal" and proposal:
        job = job_of(context(), _account(), township)
        if job is not None and job.result is not None:
            proposed, job.result = job.result, None
            draft.run(lambda p: edits.adopt(p, proposed), describe="proposal")
    elif trigger == "plan-set-workers":
        draft.run(lambda p: edits.set_workers(p, _one(chosen), _whole(workers)), describe="workers")
    elif trigger == "plan-reassign":
        draft.run(lambda p: edits.reassign(p, _one(chosen), police_area=police_area),
                  describe="reassign")
    if trigger not in (None, "plan-township", "plan-pick", "plan-colour", "plan-refresh") and draft.message is None:
        keep_draft(context(), _account(), draft)
    return _panels(draft, colour_by)


@callback(
    Output("plan-progress", "value"), Output("plan-job", "children"), Output("plan-job-tick", "disabled"),
    Output("plan-proposal", "data"),
    Input("plan-propose", "n_clicks"), Input("plan-cancel", "n_clicks"), Input("plan-job-tick", "n_intervals"),
    State("plan-township", "value"),
    prevent_initial_call=True,
)
def rebalance(_propose, _cancel, _tick, township):
    """Start, follow and cancel a rebalancing proposal; when done, hand it to the draft."""
    ctx_, account = context(), _account()
    job = job_of(ctx_, account, township)
    if ctx.triggered_id == "plan-propose" and township:
        job = start_proposal(ctx_, account, draft_for(ctx_, account, township))
    elif ctx.triggered_id == "plan-cancel" and job is not None:
        job.cancel.set()
    if job is None:
        return 0, "", True, dash.no_update
    if not job.done:
        return job.progress, f"searching… {job.progress:.0%} of the time allowed", False, dash.no_update
    return 1, job.summary, True, ({"at": time.time()} if job.result is not None else dash.no_update)


def _one(chosen: list[str]) -> str:
    """The one selected grid an edit is for."""
    if len(chosen) != 1:
        raise edits.EditRefused("select one grid first")
    return chosen[0]


def _whole(value: object) -> int:
    """A typed number of workers as a whole number (the edit refuses anything else)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise edits.EditRefused("type the number of grid workers first") from None
    if not number.is_integer():
        raise edits.EditRefused(f"workers was {value!r} but must be a whole number, 0 or more")
    return int(number)


def _map_edit(edit: dict):
    """The plan edit a map gesture asks for."""
    import shapely.geometry

    op, code = edit.get("op"), edit.get("grid")

    def shape(key: str):
        try:
            return shapely.geometry.shape(edit[key])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise edits.EditRefused(f"the {op} came without a readable {key}") from None

    def run(plan):
        if not code:
            raise edits.EditRefused("choose the grid first")
        if op == "paint":
            return edits.paint(plan, [int(f) for f in edit.get("faces") or []], code)
        if op == "split":
            return edits.split(plan, code, shape("line"))
        if op == "reshape":
            return edits.reshape(plan, code, shape("polygon"))
        raise edits.EditRefused(f"unknown edit {op!r}")
    return run


@callback(
    Output("plan-saved", "children"), Output("plan-versions", "children"), Output("plan-refresh", "data"),
    Output("plan-diff-a", "options"), Output("plan-diff-b", "options"),
    Input("plan-save", "n_clicks"), Input({"type": "plan-publish", "version": ALL}, "n_clicks"),
    Input("plan-township", "value"), Input("plan-upload", "contents"), Input("plan-discard", "n_clicks"),
    State("plan-note", "value"), State("plan-upload", "filename"),
    prevent_initial_call=False,
)
def versions_panel(_save, _publish, township, upload, _discard, note, filename):
    """Save the draft as a version, publish a version, and list the versions."""
    try:
        return _versions_panel(township, upload, note, filename)
    except DATABASE_DOWN:
        return DOWN_MESSAGE, dash.no_update, dash.no_update, dash.no_update, dash.no_update


def _versions_panel(township, upload, note, filename) -> tuple:
    ctx_ = context()
    who = principal()
    message, refresh = "", dash.no_update
    trigger = ctx.triggered_id
    try:
        if trigger == "plan-save" and township:
            draft = draft_for(ctx_, _account(), township)
            broken = draft.new_hard()
            if broken:
                raise InputError(f"fix what the draft breaks before saving: {broken[0].text()}"
                                 + (f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""))
            version = save_version(ctx_.engine, draft.plan, township=township, base_version=draft.base_version,
                                   author=who.name, message=note or "", address=_address())
            drop_draft(ctx_, _account(), township)
            message, refresh = f"saved as version {version}", version
        elif isinstance(trigger, dict) and trigger.get("type") == "plan-publish" and ctx.triggered[0]["value"]:
            report = publish(ctx_.engine, int(trigger["version"]), author=who.name, settings=ctx_.settings,
                             address=_address())
            message = (f"published version {report.version}: {report.added} grid(s) added, {report.removed} removed, "
                       f"{report.changed} changed, {report.unchanged} unchanged")
        elif trigger == "plan-discard" and township:
            drop_draft(ctx_, _account(), township)
            message, refresh = "draft discarded: the township is as in the latest version", time.time()
        elif trigger == "plan-upload" and upload:
            message, refresh = import_upload(ctx_, _account(), upload, filename or "upload"), time.time()
    except InputError as refusal:
        message = str(refusal)
    frame = versions(ctx_.engine, limit=20)
    rows = [html.Tr([html.Th(h) for h in ("version", "when", "who", "note", "")])] + [
        html.Tr([html.Td(f"v{r.version}" + (" (current)" if r.current else "")),
                 html.Td(f"{r.created_at:%m-%d %H:%M}"), html.Td(r.author), html.Td((r.note or "")[:80]),
                 html.Td(html.Button("Publish", id={"type": "plan-publish", "version": int(r.version)})
                         if r.plan and not r.current else "")])
        for r in frame.itertuples()]
    choices = [{"label": f"v{r.version}", "value": int(r.version)} for r in frame.itertuples() if r.plan]
    return message, html.Table(rows, className="plan-versions"), refresh, choices, \
        [{"label": "the draft", "value": "draft"}, *choices]


@callback(
    Output("plan-diff", "children"),
    Input("plan-diff-a", "value"), Input("plan-diff-b", "value"), State("plan-township", "value"),
    prevent_initial_call=True,
)
def compare(a, b, township):
    """The grids that differ between two versions (or a version and the draft)."""
    if a is None or b is None or not township:
        return ""
    ctx_ = context()
    before = version_grids(ctx_.engine, int(a), township=township)
    after = (draft_grids(draft_for(ctx_, _account(), township)) if b == "draft"
             else version_grids(ctx_.engine, int(b), township=township))
    table = diff(before, after)
    if table.empty:
        return html.P("no grid differs")
    head = html.Tr([html.Th(h) for h in ("grid", "", "households", "area moved (ha)")])
    return html.Table([head] + [
        html.Tr([html.Td(code), html.Td(r.status),
                 html.Td(f"{r.households_before:,.0f} → {r.households_after:,.0f}"),
                 html.Td(f"{r.area_moved_m2 / 1e4:,.1f}")]) for code, r in table.iterrows()], className="plan-diff")


@callback(
    Output("plan-download", "data"),
    Input("plan-export", "n_clicks"), State("plan-diff-a", "value"), State("plan-export-format", "value"),
    State("plan-export-crs", "value"), State("plan-township", "value"),
    prevent_initial_call=True,
)
def export(_clicks, version, fmt, crs, township):
    """Version A of the township as a file (a Shapefile zipped with its parts)."""
    if version is None:
        return dash.no_update
    data, name = export_file(context(), int(version), fmt=fmt, crs=crs, township=township)
    return dcc.send_bytes(data, name)


clientside_callback(ClientsideFunction(namespace="plan", function_name="render"),
                    Output("plan-js", "data"), Input("plan-state", "data"))
clientside_callback(ClientsideFunction(namespace="plan", function_name="tool"),
                    Output("plan-js-tool", "data"), Input("plan-tool", "value"), Input("plan-brush", "value"),
                    Input("plan-target", "value"))
