"""The console view of a sensitivity analysis: the ranking, the exclusion search and the proposal."""

from __future__ import annotations

from typing import Any

from .console import STATUS_STYLES, make_console
from .formatting import fmt

SHOWN_LAYERS = 15


def render_sensitivity(result: dict[str, Any], console: Any | None = None, all_layers: bool = False) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = console or make_console()
    precision = result["precision"]
    baseline = result["baseline"]
    samples = f", every trial over {baseline['samples']} inputs (the worst shown)" if baseline["samples"] > 1 else ""
    console.print(f"[bold]{result['model']}[/] {precision} sensitivity on {result['executor']}{samples}")
    for note in result.get("notes") or ():
        console.print(f"[yellow]note:[/] {escape(note)}")
    verdict = "pass" if baseline["passed"] else "fail"
    console.print(f"{precision} everywhere: [{STATUS_STYLES[verdict]}]{verdict.upper()}[/]"
                  + (f" ({baseline['failures'][0]})" if baseline["failures"] else ""))

    layers = result["layers"]
    table = Table(title=f"layers lowered to {precision} one at a time, most sensitive first", title_justify="left")
    for column in ("#", "layer", "module", "op", "alone", "effect at the outputs"):
        table.add_column(column, overflow="fold")
    proposal = set(result["proposal"] or ())
    shown = layers if all_layers else layers[:SHOWN_LAYERS]
    for rank, layer in enumerate(shown, 1):
        alone = "pass" if layer["passed"] else "fail"
        name = f"[bold]{layer['layer']}[/]" if layer["layer"] in proposal else layer["layer"]
        table.add_row(str(rank), name, layer["module"] or "", layer["op_type"],
                      f"[{STATUS_STYLES[alone]}]{alone}[/]", layer["summary"])
    console.print(table)
    if len(shown) < len(layers):
        console.print(f"[dim]… {len(layers) - len(shown)} more layers in the JSON report (--json)[/]")

    groups = [*(result.get("op_types") or ()), *(result.get("subgraphs") or ())]
    if groups:
        table = Table(title=f"op types and subgraphs lowered to {precision} one group at a time", title_justify="left")
        for column in ("group", "what", "alone", "effect at the outputs"):
            table.add_column(column, overflow="fold")
        for group in groups:
            alone = "pass" if group["passed"] else "fail"
            kind = f"subgraph {group['module']}" if group["op_type"] == "subgraph" else f"every {group['op_type']}"
            what = f"{kind} ({len(group.get('members') or ())} layers)"
            table.add_row(escape(group["layer"]), what, f"[{STATUS_STYLES[alone]}]{alone}[/]", group["summary"])
        console.print(table)

    if result["search"]:
        search = Table(title=f"keeping the most sensitive layers at fp32 ({result['option']})", title_justify="left")
        for column in ("kept", "verdict", "worst rel_l2", "first failure"):
            search.add_column(column, overflow="fold")
        for trial in sorted(result["search"], key=lambda t: len(t["kept"])):
            verdict = "pass" if trial["passed"] else "fail"
            search.add_row(str(len(trial["kept"])), f"[{STATUS_STYLES[verdict]}]{verdict}[/]", fmt(trial["score"]),
                           trial["failures"][0] if trial["failures"] else "")
        console.print(search)

    if result.get("exclusions"):
        buys = Table(title="what each exclusion of the proposal buys (backward elimination)", title_justify="left")
        for column in ("layer", "worst rel_l2 with it", "without it", "what fails without it"):
            buys.add_column(column, overflow="fold")
        for item in result["exclusions"]:
            buys.add_row(item["layer"], fmt(item["score_with"]), fmt(item["score_without"]), item["failure_without"])
        console.print(buys)
        if result.get("dropped"):
            console.print(f"dropped as redundant: {', '.join(result['dropped'])}")

    style = "green" if result["status"] in ("pass", "fixed") else "bold red"
    console.print(f"[{style}]{result['status'].upper()}[/]: {result['reason']}")
    if result["proposal"]:
        console.print(f"apply with: {result['apply']}")
    verification = result.get("verification")
    if verification:
        console.print(f"[dim]verified by: {verification['reproduce']}[/]")
