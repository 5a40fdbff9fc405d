"""`specc graph`: draw the network as Mermaid, Graphviz DOT, SVG or PNG.

The graph is the build plan's: one node per input and per layer, one edge per entry of a
layer's `inputs`, so a merge (`add`, `concatenate`, ...) has several in-edges and a tensor
used twice (a residual shortcut) several out-edges. Shapes and parameter counts come from
`summarize` (Keras's own shape inference); nothing here computes a shape. Mermaid and DOT are
plain text; SVG and PNG are DOT rendered by Graphviz's `dot`, which must be installed.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from specc.core.errors import DataError, Diagnostic, UsageError, printable
from specc.core.plan import Plan

if TYPE_CHECKING:
    from specc.compile.build import LayerRow

FORMATS = ("mmd", "dot", "svg", "png")  # by file suffix; `--format` overrides
RENDER_TIMEOUT_S = 60

_INSTALL_HINT = ("install Graphviz (Debian/Ubuntu: `apt install graphviz`, macOS: `brew install graphviz`), "
                 "or write `.mmd` (Mermaid) or `.dot` output, which need nothing installed")


@dataclass
class GraphNode:
    id: str  # a safe identifier in Mermaid and DOT: `n_<name>`, or `n<index>` for an unusual name
    name: str  # the plan's (and Keras's) layer name
    cls: str  # Keras class, `Input` for an input
    shape: list[int | None]  # output shape, batch axis first: [None, 32, 32, 16]
    params: int
    line: int | None  # spec line of the layer (inside its block for block layers)
    notes: list[str] = field(default_factory=list)  # the block calls around it, innermost first
    output: bool = False

    @property
    def is_input(self) -> bool:
        return self.cls == "Input"


@dataclass
class Graph:
    name: str
    nodes: list[GraphNode]
    edges: list[tuple[str, str]]  # (from name, to name), in the order of each layer's inputs
    total_params: int

    def kinds(self) -> dict[str, str]:
        """Each node's kind by name: `input`, `merge` (several in-edges) or `layer`."""
        fan_in = Counter(dst for _, dst in self.edges)
        return {n.name: "input" if n.is_input else "merge" if fan_in[n.name] > 1 else "layer" for n in self.nodes}


def graph_plan(plan: Plan, summary: tuple[list[LayerRow], int] | None = None) -> Graph:
    """The plan as a graph. `summary` is `summarize(plan)` when the caller already has it."""
    if summary is None:
        from specc.compile.build import shapes_only, summarize

        with shapes_only():  # shapes and counts; no weights are made
            summary = summarize(plan)
    rows, total = summary
    origins = {i.name: i.origin for i in plan.inputs} | {n.name: n.origin for n in plan.layers}
    nodes = [GraphNode(id=f"n_{r.name}" if re.fullmatch(r"\w+", r.name, re.ASCII) else f"n{k}",
                       name=r.name, cls=r.cls, shape=list(r.shape), params=r.params, line=r.line,
                       notes=list(origins[r.name].notes), output=r.name in plan.outputs)
             for k, r in enumerate(rows)]
    edges = [(src, layer.name) for layer in plan.layers for src in layer.inputs]
    return Graph(plan.name, nodes, edges, total)


def format_shape(shape: list[int | None]) -> str:
    """An output shape without its batch axis, as the specs' comments write it: `(32, 32, 16)`, `(64,)`."""
    return str(tuple(shape[1:]))


def format_params(params: int) -> str:
    return f"{params:,} param{'' if params == 1 else 's'}"


# Mermaid: labels are quoted; characters with a meaning there are written as entity codes (`#35;` is `#`),
# and so is every character that is not printable (a new line would end the statement, an escape sequence
# would drive the terminal the text is printed on).
_MERMAID_SPECIAL = re.compile(r'["#&<>\[\]{}|`\\]')


def escape_mermaid(text: str) -> str:
    return "".join(f"#{ord(c)};" if _MERMAID_SPECIAL.match(c) or not c.isprintable() or 0xD800 <= ord(c) <= 0xDFFF
                   else c for c in text)


def _label(text: str) -> str:
    """A name from the spec for a drawing: one line, nothing a terminal or an XML parser would refuse or obey."""
    return printable(text, lines=False)


def _info(node: GraphNode) -> str:
    """The second line of a label: `(32, 32, 16) · 2,304 params`; an input's shape alone."""
    return format_shape(node.shape) if node.is_input else f"{format_shape(node.shape)} · {format_params(node.params)}"


def emit_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart (renders on GitHub and in most Markdown viewers)."""
    ids, kinds = {n.name: n.id for n in graph.nodes}, graph.kinds()
    lines = ["flowchart TB", f"  %% {_label(graph.name)}: {format_params(graph.total_params)}"]
    for node in graph.nodes:
        head = escape_mermaid(f"{node.name} · {node.cls}" + (" · output" if node.output else ""))
        # inputs and outputs as stadiums, merges as hexagons, other layers as boxes
        left, right = ("([", "])") if node.is_input or node.output else \
            ("{{", "}}") if kinds[node.name] == "merge" else ("[", "]")
        lines.append(f'  {node.id}{left}"{head}<br/>{escape_mermaid(_info(node))}"{right}')
    lines += [f"  {ids[src]} --> {ids[dst]}" for src, dst in graph.edges]
    lines += ["  classDef input fill:#e3f2fd,stroke:#1e88e5",
              "  classDef merge fill:#fff3e0,stroke:#fb8c00",
              "  classDef output stroke:#2e7d32,stroke-width:3px"]
    for cls in ("input", "merge", "output"):
        members = [n.id for n in graph.nodes if (n.output if cls == "output" else kinds[n.name] == cls)]
        if members:
            lines.append(f"  class {','.join(members)} {cls}")
    return "\n".join(lines) + "\n"


def quote_dot(text: str) -> str:
    """A DOT double-quoted string: `"` and `\\` escaped (so `\\n`, `\\l` keep no special meaning)."""
    return '"' + _label(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


_DOT_STYLE = {  # fill, border
    "input": ("#e3f2fd", "#1e88e5"),
    "merge": ("#fff3e0", "#fb8c00"),
    "layer": ("#fafafa", "#9e9e9e"),
}


def emit_dot(graph: Graph) -> str:
    """Graphviz DOT, top to bottom, each node an HTML-like label: name and class, then shape and parameters."""
    ids, kinds = {n.name: n.id for n in graph.nodes}, graph.kinds()
    title = html.escape(f"{_label(graph.name)} · {format_params(graph.total_params)}")
    lines = [
        f"digraph {quote_dot(graph.name)} {{",
        ('  graph [rankdir=TB, labelloc=t, fontname="Helvetica", fontsize=16, ranksep=0.3, nodesep=0.35, '
         f"label=<<B>{title}</B>>];"),
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, margin="0.12,0.03"];',
        '  edge [color="#616161", arrowsize=0.7];',
    ]
    for node in graph.nodes:
        fill, border = _DOT_STYLE[kinds[node.name]]
        mark = '  <FONT COLOR="#2e7d32"><B>output</B></FONT>' if node.output else ""
        label = (f'<<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="2">'
                 f'<TR><TD><B>{html.escape(_label(node.name))}</B>  <FONT COLOR="#555555">{html.escape(_label(node.cls))}</FONT>{mark}</TD></TR>'
                 f'<TR><TD><FONT POINT-SIZE="11">{html.escape(_info(node))}</FONT></TD></TR></TABLE>>')
        where = "; ".join(([f"spec line {node.line}"] if node.line else []) + node.notes)
        attrs = [f"label={label}", f'fillcolor="{fill}"']
        attrs += ['color="#2e7d32"', "penwidth=2", "peripheries=2"] if node.output else [f'color="{border}"']
        if where:
            attrs.append(f"tooltip={quote_dot(where)}")
        lines.append(f"  {node.id} [{', '.join(attrs)}];")
    lines += [f"  {ids[src]} -> {ids[dst]};" for src, dst in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_graphviz(dot_text: str, fmt: str) -> bytes:
    """DOT rendered by Graphviz's `dot` as `svg` or `png` bytes. `UsageError` when `dot` is not installed."""
    exe = shutil.which("dot")
    if exe is None:
        raise UsageError(Diagnostic(f"`{fmt}` output needs Graphviz, which is not installed (no `dot` on PATH)",
                                    file="specc graph", hint=_INSTALL_HINT))
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True,
                              timeout=RENDER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(Diagnostic(f"Graphviz `dot` did not finish in {RENDER_TIMEOUT_S} s", file="specc graph")) from None
    if done.returncode != 0 or not done.stdout:
        why = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
        raise DataError(Diagnostic(f"Graphviz `dot -T{fmt}` failed: {why}", file="specc graph"))
    return done.stdout
