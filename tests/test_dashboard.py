"""The Grafana dashboard in docs/ only charts metrics the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from imcore.server.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"


def test_every_dashboard_query_names_an_exported_metric() -> None:
    families = list(Metrics().registry.collect())
    exported = {sample.name for family in families for sample in family.samples}
    exported |= {f.name for f in families}
    exported |= {f.name + "_total" for f in families if f.type == "counter"}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    used = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"imcore_\w+", target["expr"])
    }
    assert used
    missing = {n for n in used if n not in exported and not n.endswith("_bucket")}
    assert not missing
    buckets = {n.removesuffix("_bucket") for n in used if n.endswith("_bucket")}
    assert buckets <= exported
