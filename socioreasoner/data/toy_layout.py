"""The toy city's plan: parcels laid out in blocks (a random city or a regular grid) and the classes, functions and
names assigned to them, the SocioSeg task levels' vocabulary (`synthetic` draws them as map and satellite images)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# class -> (function, map fill colour RGB, suffix used in names)
CLASSES = {
    "school": ("educational", (255, 236, 170), "School"),
    "university": ("educational", (238, 222, 150), "University"),
    "hospital": ("medical", (250, 200, 205), "Hospital"),
    "clinic": ("medical", (240, 180, 200), "Clinic"),
    "park": ("recreational", (195, 232, 180), "Park"),
    "stadium": ("recreational", (170, 220, 190), "Stadium"),
    "office": ("commercial", (222, 210, 232), "Tower"),
    "mall": ("commercial", (245, 215, 190), "Mall"),
    "residential": ("residential", (232, 228, 224), None),
}


FUNCTIONS = sorted({f for f, _, _ in CLASSES.values()})


NAME_PREFIXES = ["Elm", "Oak", "Maple", "Cedar", "Riverside", "Hill", "Lake", "Sun", "North", "Jade",
                 "Pine", "Harbor", "Union", "Park", "Rose", "Stone"]


@dataclass
class Parcel:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 inclusive
    cls: str = "residential"
    name: str | None = None
    water: bool = False
    extras: dict = field(default_factory=dict)


def _grid_layout(size: int, n: int = 3) -> list[Parcel]:
    """An n x n grid of equal blocks, one parcel each: the same nine boxes in every sample."""
    road = max(4, size // 32)
    cuts = np.linspace(0, size, n + 1).round().astype(int)
    return [Parcel((cuts[c] + road // 2, cuts[r] + road // 2, cuts[c + 1] - road // 2 - 1, cuts[r + 1] - road // 2 - 1))
            for r in range(n) for c in range(n)]


def _layout(rng: np.random.Generator, size: int) -> list[Parcel]:
    """Blocks on a jittered grid, each split into one or two parcels, sometimes a small one."""
    n = int(rng.integers(3, 5))
    road = max(4, size // 32)
    cuts = np.linspace(0, size, n + 1)
    cuts[1:-1] += rng.uniform(-size / (4 * n), size / (4 * n), n - 1)
    cuts = cuts.round().astype(int)
    parcels = []
    for row in range(n):
        for col in range(n):
            x1, x2 = cuts[col] + road // 2, cuts[col + 1] - road // 2 - 1
            y1, y2 = cuts[row] + road // 2, cuts[row + 1] - road // 2 - 1
            if x2 - x1 < 10 or y2 - y1 < 10:
                continue
            roll = rng.random()
            gap = 2  # parcels in a block never touch, so each is its own component
            if roll < 0.35 and x2 - x1 > 30:
                mid = int(rng.integers(x1 + 12, x2 - 12))
                parcels += [Parcel((x1, y1, mid - gap, y2)), Parcel((mid + gap, y1, x2, y2))]
            elif roll < 0.6 and y2 - y1 > 30:
                mid = int(rng.integers(y1 + 12, y2 - 12))
                parcels += [Parcel((x1, y1, x2, mid - gap)), Parcel((x1, mid + gap, x2, y2))]
            elif roll < 0.75:
                # a small parcel in a corner, the rest of the block residential
                side = int(rng.integers(8, max(9, min(x2 - x1, y2 - y1) // 3)))
                sx = x1 if rng.random() < 0.5 else x2 - side
                sy = y1 if rng.random() < 0.5 else y2 - side
                parcels.append(Parcel((sx, sy, sx + side, sy + side), extras={"small": True}))
                parcels.append(Parcel((x1, y1, x2, y2), extras={"background": True}))
            else:
                parcels.append(Parcel((x1, y1, x2, y2)))
    return parcels


def _assign(rng: np.random.Generator, parcels: list[Parcel], k_choices=(1, 1, 2, 2, 3, 4),
            unique_class: bool = False) -> tuple[str, str, list[int]]:
    """Pick a query (level, text) and the target parcels; give every parcel a class and name.

    `unique_class`: no other parcel shares a target's class, so a name query is also answered
    by the map's colours (the grid city, where a tiny model cannot read the labels)."""
    candidates = [i for i, p in enumerate(parcels) if not p.extras.get("background")]
    level = str(rng.choice(["name", "class", "function"]))
    if level == "function":
        function = str(rng.choice([f for f in FUNCTIONS if f != "residential"]))
        target_classes = [c for c, (f, _, _) in CLASSES.items() if f == function]
    else:
        target_classes = [str(rng.choice([c for c in CLASSES if c != "residential"]))]
    k_max = 2 if level == "name" else 4
    k = int(min(rng.choice(list(k_choices)), k_max, max(1, len(candidates) - 2)))
    targets = [int(i) for i in rng.choice(candidates, size=k, replace=False)]
    shared_classes = level == "name" and not unique_class
    others = list(CLASSES) if shared_classes else [c for c in CLASSES if c not in target_classes]
    prefixes = list(rng.permutation(NAME_PREFIXES))
    # the target's name is drawn first, so no other place can share it
    target_name = f"{prefixes.pop()} {CLASSES[target_classes[0]][2]}" if level == "name" else None
    for i, parcel in enumerate(parcels):
        if i in targets:
            parcel.cls = str(rng.choice(target_classes))
        elif parcel.extras.get("background"):
            parcel.cls = "residential"
        elif rng.random() < 0.12:
            parcel.water, parcel.cls = True, "residential"
            continue
        else:
            parcel.cls = str(rng.choice(others))
        suffix = CLASSES[parcel.cls][2]
        if suffix is None:
            continue
        if i in targets and level == "name":
            parcel.name = target_name
        else:
            parcel.name = f"{prefixes.pop() if prefixes else 'New'} {suffix}"
    if level == "name":
        # a campus split over two parcels shares one name and class
        for i in targets:
            parcels[i].cls, parcels[i].name = parcels[targets[0]].cls, target_name
        text = target_name
    elif level == "class":
        text = target_classes[0]
    else:
        text = CLASSES[target_classes[0]][0]
    return level, text, targets
