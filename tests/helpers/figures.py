"""What a figure's JSON says a reader sees, checked: its legend promises only what is drawn,
fits beside or under its axes, and its log axes and colour scales read."""

from __future__ import annotations


def legend_disagreements(data: dict) -> list[dict]:
    """The legend entries whose colour, line style or marker no drawn artist of that colour
    shows (a grey band in the legend and a dashed line in the plot, a grey marker for a blue
    one)."""
    drawn = data["drawn"]
    bad = []
    for entry in data["legend"]["entries"]:
        same = [a for a in drawn if a["kind"] == entry["kind"] and a.get("color") ==
                entry.get("color")]
        if entry["kind"] == "line":
            styled = entry["linestyle"] == "none" or any(
                a["linestyle"] == entry["linestyle"] for a in same)
            marked = entry["marker"] == "none" or any(a["marker"] == entry["marker"]
                                                      for a in same)
            if not (same and styled and marked):
                bad.append(entry)
        elif not same:
            bad.append(entry)
    return bad


def legend_outgrows_axes(data: dict) -> bool:
    """The legend is taller than the figure's data axes together."""
    return data["legend"]["height_in"] > sum(a["height_in"] for a in data["axes"]) + 1e-6


def legend_ambiguities(data: dict) -> list[tuple]:
    """Looks (colour, line style, marker) that two legend entries with different labels share:
    a reader could not tell their curves apart."""
    seen: dict[tuple, str] = {}
    clashes = []
    for entry in data["legend"]["entries"]:
        key = (entry["kind"], entry.get("color"), entry.get("linestyle"), entry.get("marker"))
        if key in seen and seen[key] != entry["label"]:
            clashes.append(key)
        seen.setdefault(key, entry["label"])
    return clashes
