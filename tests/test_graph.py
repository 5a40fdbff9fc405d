"""`specc graph`: Mermaid and DOT drawings of every spec agree with the plan and with `summarize`.

Mermaid and DOT are read back (a small parser here for both; Graphviz's own `dot -Tjson` too when it
is installed), so a missing node, a wrong edge, shape or parameter count fails a test.
"""

import html
import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

import specc
from specc import cli
from specc.compile.build import shapes_only, summarize
from specc.tools.graph import (
    Graph,
    GraphNode,
    emit_dot,
    emit_mermaid,
    escape_mermaid,
    graph_plan,
    quote_dot,
)

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))
SMALL = str(ROOT / "specs" / "recommender.model")  # two inputs, a Dot and a 3-way Add merge; builds in a second
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")

_MMD_NODE = re.compile(r'^  (\w+)(\(\[|\{\{|\[)"([^"]*)"(\]\)|\}\}|\])$')
_MMD_EDGE = re.compile(r"^  (\w+) --> (\w+)$")
_DOT_NODE = re.compile(r"^  (\w+) \[label=<(.*)>, fillcolor=")
_DOT_EDGE = re.compile(r"^  (\w+) -> (\w+);$")


@cache
def compiled(path: str):
    """(plan, summary rows, total, graph) of a spec, each model built once."""
    plan = specc.load(path).plan
    with shapes_only():  # shapes and counts, no weights: as `specc graph` builds
        rows, total = summarize(plan)
    return plan, rows, total, graph_plan(plan, (rows, total))


def plan_edges(plan) -> Counter:
    return Counter((src, layer.name) for layer in plan.layers for src in layer.inputs)


def expected_info(row) -> str:
    """What the label's second line must say, from `summarize`'s row: shape without the batch axis, params."""
    assert row.shape[0] is None  # the batch axis
    shape = "(" + ", ".join(str(d) for d in row.shape[1:]) + ("," if len(row.shape) == 2 else "") + ")"
    return shape if row.cls == "Input" else f"{shape} · {row.params:,} param{'' if row.params == 1 else 's'}"


def parse_mermaid(text: str):
    """Node id -> (bracket, label) and the edges as id pairs; every line must be understood."""
    assert text.startswith("flowchart TB\n")
    nodes, edges = {}, Counter()
    for line in text.splitlines()[1:]:
        if m := _MMD_NODE.match(line):
            assert m.group(1) not in nodes, f"duplicate node id {m.group(1)}"
            nodes[m.group(1)] = (m.group(2), m.group(3))
        elif m := _MMD_EDGE.match(line):
            edges[m.group(1), m.group(2)] += 1
        else:
            assert re.match(r"^  (%% |classDef \w+ |class [\w,]+ \w+$)", line), f"unexpected Mermaid line: {line!r}"
    return nodes, edges


def parse_dot(text: str):
    nodes, edges = {}, Counter()
    for line in text.splitlines():
        if m := _DOT_NODE.match(line):
            nodes[m.group(1)] = m.group(2)
        elif m := _DOT_EDGE.match(line):
            edges[m.group(1), m.group(2)] += 1
    return nodes, edges


def html_text(label: str) -> str:
    """The visible text of a DOT HTML-like label."""
    return html.unescape(re.sub(r"<[^>]*>", " ", label))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_mermaid_has_every_layer_edge_shape_and_count(path):
    plan, rows, total, graph = compiled(str(path))
    nodes, edges = parse_mermaid(emit_mermaid(graph))
    ids = {n.name: n.id for n in graph.nodes}
    assert len(nodes) == len(rows) == len(set(ids.values()))
    for row in rows:
        _, label = nodes[ids[row.name]]
        head, info = label.split("<br/>")
        assert head.startswith(escape_mermaid(f"{row.name} · {row.cls}")), label
        assert info == escape_mermaid(expected_info(row)), (row, label)
        assert head.endswith(" · output") == (row.name in plan.outputs)
    by_id = {v: k for k, v in ids.items()}
    assert Counter({(by_id[a], by_id[b]): c for (a, b), c in edges.items()}) == plan_edges(plan)
    assert f"{total:,} params" in emit_mermaid(graph).splitlines()[1]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_dot_has_every_layer_edge_shape_and_count(path):
    plan, rows, _, graph = compiled(str(path))
    text = emit_dot(graph)
    nodes, edges = parse_dot(text)
    ids = {n.name: n.id for n in graph.nodes}
    assert set(nodes) == set(ids.values())
    for row in rows:
        visible = html_text(nodes[ids[row.name]])
        assert f" {row.name} " in visible and f" {row.cls} " in visible and f" {expected_info(row)} " in visible
    by_id = {v: k for k, v in ids.items()}
    assert Counter({(by_id[a], by_id[b]): c for (a, b), c in edges.items()}) == plan_edges(plan)
    if HAS_DOT:  # Graphviz parses it back: the same nodes, edges and the text it draws in each node
        laid = json.loads(subprocess.run(["dot", "-Tjson"], input=text, capture_output=True, text=True,
                                         check=True, timeout=60).stdout)
        names = [o["name"] for o in laid["objects"]]
        assert sorted(names) == sorted(ids.values())
        drawn = Counter((by_id[names[e["tail"]]], by_id[names[e["head"]]]) for e in laid["edges"])
        assert drawn == plan_edges(plan)
        for obj in laid["objects"]:
            row = next(r for r in rows if ids[r.name] == obj["name"])
            texts = [op["text"] for op in obj["_ldraw_"] if op["op"] == "T"]
            assert texts[0] == row.name and expected_info(row) in texts, texts


def test_resnet_branches_and_merges():
    """ResNet-20: 9 residual blocks, each an Add with 2 in-edges fed by a tensor that also feeds the branch."""
    _, rows, _, graph = compiled(str(ROOT / "specs" / "cifar10_resnet20.model"))
    fan_in = Counter(dst for _, dst in graph.edges)
    fan_out = Counter(src for src, _ in graph.edges)
    adds = [r.name for r in rows if r.cls == "Add"]
    assert len(adds) == 9 and all(fan_in[a] == 2 for a in adds)
    assert [n for n, k in graph.kinds().items() if k == "merge"] == adds
    assert sum(1 for c in fan_out.values() if c == 2) == 9  # the input of each block: branch + shortcut
    # identity shortcut: the first block's input goes straight into its Add
    assert ("relu", "add") in graph.edges and ("relu", "conv2d_1") in graph.edges
    # projection shortcut of the first down-sampling block: a 1x1 conv + batch norm into add_3
    assert ("batchnorm_9", "add_3") in graph.edges and ("relu_6", "conv2d_9") in graph.edges
    mermaid, _ = parse_mermaid(emit_mermaid(graph))
    assert all(mermaid[f"n_{a}"][0] == "{{" for a in adds)  # drawn as hexagons
    dot = emit_dot(graph)
    assert all(re.search(rf'^  n_{a} \[.*fillcolor="#fff3e0"', dot, re.MULTILINE) for a in adds)


def test_graph_plan_summarizes_itself():
    plan, _, _, graph = compiled(SMALL)
    assert graph_plan(plan) == graph
    assert [n.name for n in graph.nodes if n.output] == ["rating"]
    assert graph.kinds()["add"] == "merge" and graph.kinds()["user"] == "input"


def test_labels_are_escaped():
    odd = 'a"b#c[d]<e>&{f}|`g\\'
    graph = Graph('m"x', [GraphNode("n0", odd, "Input", [None, 3], 0, 1),
                          GraphNode("n_y", "y", "Dense", [None, None, 4], 16, 2, ['in block `b"q`, used at line 2'],
                                    output=True)], [(odd, "y")], 16)
    nodes, edges = parse_mermaid(emit_mermaid(graph))  # no quote, bracket or `#` breaks a label open
    label = nodes["n0"][1]
    assert not re.search(r'["\[\]<>{}|`\\]', label.replace("<br/>", "")) and re.sub(r"#\d+;", "", label).count("#") == 0
    assert re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label).startswith(odd + " · Input")
    assert edges == Counter({("n0", "n_y"): 1})
    assert quote_dot('a"b\\n') == '"a\\"b\\\\n"'
    dot = emit_dot(graph)
    assert html_text(parse_dot(dot)[0]["n0"]).split()[0] == odd
    if HAS_DOT:
        laid = json.loads(subprocess.run(["dot", "-Tjson"], input=dot, capture_output=True, text=True,
                                         check=True).stdout)
        assert laid["name"] == 'm"x' and laid["objects"][1]["tooltip"] == 'spec line 2; in block `b"q`, used at line 2'
        assert next(op["text"] for op in laid["objects"][0]["_ldraw_"] if op["op"] == "T") == odd


def test_cli_prints_mermaid_and_writes_dot(tmp_path, capsys):
    assert cli.main(["graph", SMALL]) == 0
    out = capsys.readouterr().out
    graph = compiled(SMALL)[3]
    assert out == emit_mermaid(graph)
    assert cli.main(["graph", SMALL, "--format", "dot"]) == 0
    assert capsys.readouterr().out == emit_dot(graph)
    target = tmp_path / "arch.dot"
    assert cli.main(["graph", SMALL, "-o", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == emit_dot(graph)
    assert cli.main(["graph", SMALL, "-o", str(tmp_path / "arch.txt"), "--format", "mmd"]) == 0
    assert (tmp_path / "arch.txt").read_text(encoding="utf-8") == emit_mermaid(graph)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.dot", "arch.txt"]  # no temporary files left


@needs_dot
def test_cli_renders_svg_and_png(tmp_path):
    svg, png = tmp_path / "arch.svg", tmp_path / "arch.png"
    assert cli.main(["graph", SMALL, "-o", str(svg)]) == 0
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"rating", "match", "add", "user", "item", "(1,) · 2 params", "(8,) · 0 params"} <= texts
    assert cli.main(["graph", SMALL, "-o", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 300


@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_svg_without_graphviz_says_how_to_install_it(tmp_path, capsys, monkeypatch, suffix):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` to be found
    target = tmp_path / f"arch.{suffix}"
    assert cli.main(["graph", SMALL, "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "Graphviz" in err and "not installed" in err
    assert "apt install graphviz" in err and "brew install graphviz" in err and ".mmd" in err and ".dot" in err
    assert not target.exists()


def test_usage_errors(tmp_path, capsys):
    assert cli.main(["graph", SMALL, "-o", str(tmp_path / "arch.jpg")]) == 2
    assert ".mmd, .dot, .svg, .png" in capsys.readouterr().err
    assert cli.main(["graph", str(tmp_path / "missing.model")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["graph", SMALL, "-o", str(tmp_path / "no" / "such" / "arch.mmd")]) == 2
    assert "cannot write" in capsys.readouterr().err
