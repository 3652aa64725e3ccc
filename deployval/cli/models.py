"""`deployval models` and `deployval backends`: what is registered, and what can run here."""

from __future__ import annotations

from ..errors import first_line


def models_command() -> None:
    """List the registered models."""
    from rich.table import Table

    from ..catalog.registry import model_entries
    from ..model.spec import ModelSpec, format_shape
    from ..report.console import make_console

    table = Table(title="models", title_justify="left")
    for column in ("name", "inputs", "gate (cpu)", "description"):
        table.add_column(column)
    for name, entry in model_entries().items():
        if isinstance(entry, ModelSpec):
            inputs = ", ".join(f"{i.name} {format_shape(i.shape)} {i.dtype}" for i in entry.inputs)
            table.add_row(name, inputs, " ".join(entry.gate_for("cpu")), entry.description)
        else:
            table.add_row(name, "-", "-", f"entry point {entry}")
    make_console().print(table)


def backends_command() -> None:
    """List every backend, its precisions and devices, and whether it can run here (and why not)."""
    from rich.table import Table

    from ..backends.base import backend_entries, check_available
    from ..backends.options import option_infos
    from ..model.spec import format_value
    from ..report.console import make_console

    table = Table(title="backends", title_justify="left")
    options = Table(title="backend options (--backend-option NAME.FIELD=VALUE)", title_justify="left")
    for column in ("option", "type", "default", "help"):
        options.add_column(column, overflow="fold")
    for column in ("name", "precisions", "cpu", "cuda", "origin", "description"):
        table.add_column(column, overflow="fold")
    for name, entry in backend_entries().items():
        try:
            cls = entry.load()
        except Exception as exc:
            table.add_row(name, "-", f"[red]no[/]: {first_line(exc)}", "-", entry.origin, "")
            continue
        cells = []
        for device in ("cpu", "cuda"):
            if device not in cls.devices:
                cells.append("[dim]n/a[/]")
                continue
            ok, reason = check_available(cls, device)
            cells.append("[green]yes[/]" if ok else f"[red]no[/]: {reason}")
        table.add_row(name, ", ".join(cls.artifacts), *cells, entry.origin, cls.description)
        for info in option_infos(cls):
            also = f" (also {info.flag})" if info.flag else ""
            options.add_row(f"{name}.{info.name}", info.type, format_value(info.default), info.help + also)
    console = make_console()
    console.print(table)
    if options.row_count:
        console.print(options)
