"""Build bbjtune's compact BBjAPI table (src/bbjtune/bbj/bbjapi_table.json) from the API index.

The index (`bbj-corpus/language-server/api/bbjapi-index.json`, derived from the BBj language
server's javadoc data, MIT) lists each class's method names with the parameter types of every
overload, but neither return types nor superclasses. The table keeps only what the tier 2 checks
need: for each class of the BBj object packages (`com.basis.bbj.proxies`, its `sysgui` and `event`
packages) the methods with their allowed argument counts, plus the class's parents. The parents
are stated here by hand (BBj's documented hierarchy: a BBjTopLevelWindow is a BBjWindow is a
BBjControl, a BBjInputNSpinner is a BBjInputN and a BBjSpinner, ...) because the index has none;
where the hierarchy is not certain a class gets more parents rather than fewer, because a
missing parent means false alarms and an extra one only a missed invented method.

    python benchmarks/build_api_table.py ../shared/bbj-corpus/language-server/api/bbjapi-index.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PACKAGES = ("com.basis.bbj.proxies", "com.basis.bbj.proxies.sysgui", "com.basis.bbj.proxies.event")
OUT = Path(__file__).resolve().parents[1] / "src" / "bbjtune" / "bbj" / "bbjapi_table.json"

# sysgui classes that are not controls: no BBjControl methods.
NON_CONTROLS = {
    "BBjFont",
    "BBjImage",
    "BBjIcon",
    "BBjImageManager",
    "BBjSystemMetrics",
    "BBjGridSortInfo",
    "BBjHelpManager",
    "BBjGeolocation",
    "BBjServerSecurity",
    "BBjGridData",
    "BBjGridCell",
    "BBjGridHeader",
    "SysGuiBatchAgent",
}
# Interfaces that controls implement; every control may use their methods.
CONTROL_MIXINS = [
    "ClientValidation",
    "DragSource",
    "DropTarget",
    "Editable",
    "Focusable",
    "GridRecordSetBindable",
    "Injectable",
    "ListBehavior",
    "RecordSetBindable",
    "RecordSetFillable",
    "ScrollWheelBehaviorIF",
    "Scrollable",
    "Separator",
    "TabTraversable",
    "TextAlignable",
    "TextControl",
    "Validation",
    "WrappedJComponentBase",
]
PARENTS = {
    "BBjWindow": ["BBjControl"],
    "BBjTopLevelWindow": ["BBjWindow", "MDIWindowIF"],
    "BBjChildWindow": ["BBjWindow"],
    "BBjDialogWindow": ["BBjWindow"],
    "BBjToggleButton": ["BBjButton"],
    "BBjToolButton": ["BBjButton", "BBjToggleButton"],
    "BBjCheckBox": ["BBjToggleButton"],
    "BBjRadioButton": ["BBjToggleButton"],
    "BBjMenuButton": ["BBjButton"],
    "BBjInputD": ["BBjInput"],
    "BBjInputE": ["BBjInput"],
    "BBjInputN": ["BBjInput"],
    "BBjInputT": ["BBjInput"],
    "BBjInputDSpinner": ["BBjInputD", "BBjSpinner"],
    "BBjInputESpinner": ["BBjInputE", "BBjSpinner"],
    "BBjInputNSpinner": ["BBjInputN", "BBjSpinner"],
    "BBjInputTSpinner": ["BBjInputT", "BBjSpinner"],
    "BBjEditBoxSpinner": ["BBjEditBox", "BBjSpinner"],
    "BBjListSpinner": ["BBjSpinner", "ListBehavior"],
    "BBjCEdit": ["BBjEditBox"],
    "BBjListBox": ["ListBehavior"],
    "BBjListButton": ["ListBehavior", "BBjComboBox"],
    "BBjListEdit": ["ListBehavior", "BBjEditBox", "BBjComboBox"],
    "BBjStandardGrid": ["BBjGrid"],
    "BBjDataAwareGrid": ["BBjGrid"],
    "BBjDataBoundGrid": ["BBjGrid"],
    "BBjDebugGrid": ["BBjGrid"],
    "BBjCommonChart": ["BBjChart"],
    "BBjGenericChart": ["BBjChart"],
    "BBjBarChart": ["BBjCommonChart"],
    "BBjLineChart": ["BBjCommonChart"],
    "BBjPieChart": ["BBjCommonChart"],
    "BBjMenu": ["BBjMenuItem"],
    "BBjPopupMenu": ["BBjMenu"],
    "BBjCheckableMenuItem": ["BBjMenuItem"],
    "BBjMenuBar": ["BBjMenu"],
    "BBjEnterpriseNamespace": ["BBjNamespace"],
    "BBjMDI": ["MDIInfraStructureIF", "MDIWindowIF", "MDIBorderManagementIF"],
    "BBjWebManager": ["BBjBuiManager"],
}
# Methods BASIS documents that the javadoc data lacks (found by the precision run on real code,
# benchmarks/tier2_precision.py): class -> method -> argument counts.
SUPPLEMENT = {
    "BBjStandardGrid": {"setColumnStyle": [2]},
}
# Every event class stands for any event: code rarely names the exact class of the event it
# handles (getLastEvent(), getEventData()), and the event hierarchy is deep.
EVENT_FAMILY = "BBjEvent"


def counts(overloads: list[list[str]]) -> list[int]:
    return sorted({len(params) for params in overloads})


def build(index: dict) -> dict:
    packages = index["packages"]
    classes: dict[str, dict] = {}
    for package in PACKAGES:
        for name, info in sorted(packages[package].items()):
            if name in classes:
                continue  # BBjString exists twice; the proxies one comes first
            parents = list(PARENTS.get(name, []))
            if (
                package.endswith(".sysgui")
                and name not in NON_CONTROLS
                and name != "BBjControl"
                and name not in CONTROL_MIXINS
            ):
                parents += ["BBjControl", *CONTROL_MIXINS]
            if package.endswith(".event") and name != EVENT_FAMILY:
                parents.append(EVENT_FAMILY)
            classes[name] = {
                "package": package.rsplit(".", 1)[-1] if package != PACKAGES[0] else "proxies",
                "parents": sorted(dict.fromkeys(parents)),
                "methods": {m: counts(o) for m, o in sorted(info["methods"].items())},
            }
            classes[name]["methods"].update(SUPPLEMENT.get(name, {}))
    # Event family: BBjEvent allows every event's methods (see EVENT_FAMILY).
    events = classes[EVENT_FAMILY]["methods"]
    for name, cls in classes.items():
        if cls["package"] == "event":
            for m, c in cls["methods"].items():
                events[m] = sorted(set(events.get(m, [])) | set(c))
    return {
        "origin": "derived from the BBj language server's javadoc data (BBx-Kitchen/bbj-language-server, "
        "MIT) via bbj-corpus api/bbjapi-index.json: class and method names and argument counts "
        "only; parents stated by benchmarks/build_api_table.py",
        "source_note": index.get("source", ""),
        "classes": classes,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/build_api_table.py PATH/TO/bbjapi-index.json", file=sys.stderr)
        return 2
    index = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    table = build(index)
    OUT.write_text(json.dumps(table, separators=(",", ":")) + "\n", encoding="utf-8")
    n_methods = sum(len(c["methods"]) for c in table["classes"].values())
    print(f"{OUT.name}: {len(table['classes'])} classes, {n_methods} methods, {OUT.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
