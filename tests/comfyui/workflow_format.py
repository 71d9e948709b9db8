"""UI workflow (the editor's litegraph JSON) <-> API prompt (what `POST /prompt` takes), using the nodes' INPUT_TYPES.

A widget's value sits in `widgets_values` in the order the node declares its widget inputs (required, then optional);
an INT with `control_after_generate` is followed by one extra UI-only value ("fixed", "randomize", ...). Frontend-only
nodes (notes, reroutes) have no API form.
"""
from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def _declared(node_class) -> list[tuple[str, object, dict]]:
    spec = node_class.INPUT_TYPES()
    found = []
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            found.append((name, kind, options))
    return found


def _is_widget(kind, options) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def widget_names(node_class) -> list[tuple[str, bool]]:
    """(name, followed by a control_after_generate value) for each widget input, in UI order."""
    return [(name, bool(options.get("control_after_generate"))) for name, kind, options in _declared(node_class)
            if _is_widget(kind, options)]


def ui_to_api(workflow: dict, node_classes: dict) -> dict:
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != 0:
            continue
        node_class = node_classes[node["type"]]
        inputs = {}
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, source, slot, _, _, _ = links[socket["link"]]
                inputs[socket["name"]] = [str(source), slot]
        values = list(node.get("widgets_values", []))
        position = 0
        for name, has_control in widget_names(node_class):
            if name in inputs:
                continue
            if position >= len(values):
                break
            inputs[name] = values[position]
            position += 2 if has_control else 1
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def api_to_ui(prompt: dict, node_classes: dict, notes: dict[str, str] | None = None) -> dict:
    """A UI workflow for an API prompt: nodes left to right by dependency depth, links for every socket input."""
    depth: dict[str, int] = {}

    def level(node_id: str) -> int:
        if node_id not in depth:
            sources = [value[0] for value in prompt[node_id]["inputs"].values() if isinstance(value, list)]
            depth[node_id] = 1 + max((level(source) for source in sources), default=-1)
        return depth[node_id]

    nodes, links, rows = [], [], {}
    outputs_of: dict[str, list[dict]] = {}
    for node_id in sorted(prompt, key=int):
        node_class = node_classes[prompt[node_id]["class_type"]]
        outputs_of[node_id] = [{"name": name, "type": kind, "links": [], "slot_index": slot}
                               for slot, (kind, name) in enumerate(zip(node_class.RETURN_TYPES, getattr(
                                   node_class, "RETURN_NAMES", None) or node_class.RETURN_TYPES))]
    for node_id in sorted(prompt, key=int):
        entry = prompt[node_id]
        node_class = node_classes[entry["class_type"]]
        column = level(node_id)
        row = rows.get(column, 0)
        rows[column] = row + 1
        sockets, values = [], []
        declared = {name: kind for name, kind, _ in _declared(node_class)}
        for name, value in entry["inputs"].items():
            if isinstance(value, list):
                link_id = len(links) + 1
                source, slot = value
                kind = node_classes[prompt[source]["class_type"]].RETURN_TYPES[slot]
                links.append([link_id, int(source), slot, int(node_id), len(sockets), kind])
                outputs_of[source][slot]["links"].append(link_id)
                sockets.append({"name": name, "type": declared.get(name, kind), "link": link_id})
        for name, has_control in widget_names(node_class):
            if name in entry["inputs"] and not isinstance(entry["inputs"][name], list):
                values.append(entry["inputs"][name])
                if has_control:
                    values.append("fixed")
        nodes.append({"id": int(node_id), "type": entry["class_type"], "pos": [40 + 420 * column, 40 + 360 * row],
                      "size": [380, 300], "flags": {}, "order": len(nodes), "mode": 0, "inputs": sockets,
                      "outputs": outputs_of[node_id], "properties": {"Node name for S&R": entry["class_type"]},
                      "widgets_values": values})
    for index, (title, text) in enumerate((notes or {}).items()):
        nodes.append({"id": 1000 + index, "type": "MarkdownNote", "pos": [40, -260 - 220 * index], "size": [760, 200],
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                      "title": title, "properties": {}, "widgets_values": [text]})
    return {"last_node_id": max(node["id"] for node in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}
