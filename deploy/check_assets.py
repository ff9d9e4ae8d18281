#!/usr/bin/env python3
"""Offline consistency checks of the deploy/ observability assets against the code.

Run by deploy/check.sh (with Debian's python3 and python3-yaml). Checks that

- every metric name in alerts.yml, alerts_test.yml and the Grafana dashboard is one that
  crates/telemetry/src/metrics.rs defines (histogram series: its _bucket/_sum/_count) and that
  the code actually records (its constant is used outside metrics.rs);
- every label matcher on a Dispatch metric names a label that metric is recorded with (read from
  the `metrics::counter!/gauge!/histogram!` calls in crates/*/src), and every grouping label,
  `$labels.x` and `{{x}}` legend names a known label;
- every alert has `for`, a severity label and summary/description annotations, and the unit
  tests fire every alert at least once;
- the dashboard uses only the datasource uid `prometheus` (no `${DS_...}` inputs), has unique
  panel ids and non-overlapping positions, and its queries use no template variables besides
  Grafana's built-in intervals;
- the provisioning files point at that datasource and a dashboards directory;
- the Kubernetes example in prometheus.yml's comments is YAML for scrape configs of the jobs
  `api` and `worker` (Debian's promtool is built without Kubernetes discovery and cannot load it).

It writes every dashboard query as a recording rule to --dashboard-rules, for `promtool check
rules` to parse (Grafana's $__rate_interval / $__range become fixed durations there).
"""

import argparse
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
METRICS_RS = ROOT / "crates/telemetry/src/metrics.rs"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/dispatch.json"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/dispatch.yml"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"

# Labels Prometheus itself attaches (target labels) or that PromQL introduces.
TARGET_LABELS = {"job", "instance", "pod", "namespace"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
SEVERITIES = {"critical", "warning", "info"}

errors: list[str] = []


def error(msg: str) -> None:
    errors.append(msg)


def rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


# --- What the code defines and records ------------------------------------------------------

def read_code():
    text = METRICS_RS.read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', text))
    metrics = {c: v for c, v in consts.items() if v.startswith("dispatch_")}
    label_keys = {c: v for c, v in consts.items() if not v.startswith("dispatch_")}
    kinds = {}
    for kind, const in re.findall(r"describe_(counter|gauge|histogram)!\(\s*(\w+)", text):
        if const in metrics:
            kinds[metrics[const]] = kind
    for const, name in metrics.items():
        if name not in kinds:
            error(f"{rel(METRICS_RS)}: {name} ({const}) has no describe_* call (no HELP/TYPE)")

    used = set()
    labels: dict[str, set[str]] = {name: set() for name in metrics.values()}
    for path in sorted(ROOT.glob("crates/*/src/**/*.rs")):
        if path == METRICS_RS:
            continue
        src = path.read_text()
        for const, name in metrics.items():
            if re.search(rf"::{const}\b", src):
                used.add(name)
        # metrics::counter!(names::X, names::KEY => value, ...): the labels each name gets.
        for m in re.finditer(r"metrics::(?:counter|gauge|histogram)!\(", src):
            depth, i = 1, m.end()
            while depth and i < len(src):
                depth += {"(": 1, ")": -1}.get(src[i], 0)
                i += 1
            args = src[m.end():i - 1]
            first = re.match(r"\s*(?:[\w:]*::)?(\w+)", args)
            if not first or first.group(1) not in metrics:
                continue  # a dynamic name (e.g. `counter!(name)`): recorded without labels
            for key in re.findall(r"::(\w+)\s*=>", args):
                if key in label_keys:
                    labels[metrics[first.group(1)]].add(label_keys[key])
                else:
                    error(f"{rel(path)}: label key {key} is not a constant of metrics.rs")
    return metrics, kinds, used, labels, set(label_keys.values())


METRICS, KINDS, USED, LABELS, LABEL_KEYS = read_code()
KNOWN_LABELS = LABEL_KEYS | TARGET_LABELS | {"le"}


def base_name(token: str):
    """The defined metric a series name belongs to, or None."""
    if token in KINDS:
        return token
    for suffix in HISTOGRAM_SUFFIXES:
        if token.endswith(suffix) and KINDS.get(token[: -len(suffix)]) == "histogram":
            return token[: -len(suffix)]
    return None


def check_names(where: str, text: str) -> None:
    for token in sorted(set(re.findall(r"\bdispatch_[a-z0-9_]+\b", text))):
        base = base_name(token)
        if base is None:
            hint = ""
            if token in METRICS.values():
                hint = " (defined, but not described)"
            error(f"{where}: {token} is not a metric defined in {rel(METRICS_RS)}{hint}")
        elif base not in USED:
            error(f"{where}: {token} is defined in metrics.rs but never recorded by the code")


def check_expr(where: str, expr: str) -> None:
    check_names(where, expr)
    for name, body in re.findall(r"\b([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        keys = re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body)
        base = base_name(name)
        if name.startswith("dispatch_") and base:
            allowed = LABELS[base] | TARGET_LABELS
            if name.endswith("_bucket"):
                allowed = allowed | {"le"}
        elif name == "up":
            allowed = TARGET_LABELS
        else:
            allowed = KNOWN_LABELS
        for key in keys:
            if key not in allowed:
                error(f"{where}: {name} is not recorded with label `{key}` "
                      f"(it has: {', '.join(sorted(allowed)) or 'none'})")
    for clause, body in re.findall(
            r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        for key in re.findall(r"\w+", body):
            if key not in KNOWN_LABELS:
                error(f"{where}: `{clause} ({body})` names unknown label `{key}`")


# --- Alerts -----------------------------------------------------------------------------------

def check_alerts():
    text = ALERTS.read_text()
    check_names(rel(ALERTS), text)
    doc = yaml.safe_load(text)
    alerts = []
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            where = f"{rel(ALERTS)}: {name}"
            check_expr(where, str(rule.get("expr", "")))
            if "alert" not in rule:
                continue
            alerts.append(name)
            if "for" not in rule:
                error(f"{where}: no `for:`")
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                error(f"{where}: severity label must be one of {sorted(SEVERITIES)}")
            annotations = rule.get("annotations", {})
            for key in ("summary", "description"):
                if not annotations.get(key):
                    error(f"{where}: no `{key}` annotation")
            for value in annotations.values():
                for label in re.findall(r"\$labels\.(\w+)", value):
                    if label not in KNOWN_LABELS:
                        error(f"{where}: annotation uses unknown label $labels.{label}")
    if len(alerts) != len(set(alerts)):
        error(f"{rel(ALERTS)}: duplicate alert names")

    test_text = ALERTS_TEST.read_text()
    check_names(rel(ALERTS_TEST), test_text)
    tests = yaml.safe_load(test_text)
    fired = set()
    for test in tests.get("tests", []):
        for series in test.get("input_series", []):
            check_expr(f"{rel(ALERTS_TEST)}: input series", series["series"])
        for case in test.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
            if case["alertname"] not in alerts:
                error(f"{rel(ALERTS_TEST)}: tests unknown alert {case['alertname']}")
    for name in alerts:
        if name not in fired:
            error(f"{rel(ALERTS_TEST)}: no test case fires {name}")
    return alerts


# --- Dashboard --------------------------------------------------------------------------------

def all_panels(panels):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def check_dashboard(rules_out: pathlib.Path):
    text = DASHBOARD.read_text()
    where = rel(DASHBOARD)
    if "${DS_" in text or "__inputs" in text:
        error(f"{where}: uses a ${{DS_...}} input; refer to the datasource by uid `prometheus`")
    dash = json.loads(text)
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 39:
        error(f"{where}: schemaVersion must be 39 or newer")
    if not dash.get("uid") or not dash.get("title"):
        error(f"{where}: needs a uid and a title")

    ids, cells, rules = set(), {}, []
    for panel in all_panels(dash.get("panels", [])):
        pid, title = panel.get("id"), panel.get("title", "?")
        pwhere = f"{where}: panel {pid} {title!r}"
        if pid in ids:
            error(f"{pwhere}: duplicate panel id")
        ids.add(pid)
        pos = panel.get("gridPos", {})
        if pos.get("x", 0) + pos.get("w", 0) > 24:
            error(f"{pwhere}: wider than the 24-column grid")
        for x in range(pos.get("x", 0), pos.get("x", 0) + pos.get("w", 0)):
            for y in range(pos.get("y", 0), pos.get("y", 0) + pos.get("h", 0)):
                if (x, y) in cells:
                    error(f"{pwhere}: overlaps panel {cells[(x, y)]}")
                    break
                cells[(x, y)] = pid
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            error(f"{pwhere}: datasource must be {DATASOURCE}")
        targets = panel.get("targets", [])
        if not targets:
            error(f"{pwhere}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or None in refs:
            error(f"{pwhere}: refIds must be present and unique")
        for target in targets:
            twhere = f"{pwhere} query {target.get('refId')}"
            if target.get("datasource") != DATASOURCE:
                error(f"{twhere}: datasource must be {DATASOURCE}")
            expr = target.get("expr", "")
            if not expr.strip():
                error(f"{twhere}: empty expr")
                continue
            check_expr(twhere, expr)
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                if label not in KNOWN_LABELS:
                    error(f"{twhere}: legend uses unknown label {label}")
            parsed = expr
            for var in re.findall(r"\$\{?\w+\}?", expr):
                bare = var.replace("{", "").replace("}", "")
                if bare not in GRAFANA_INTERVALS:
                    error(f"{twhere}: template variable {var} (only {sorted(GRAFANA_INTERVALS)})")
                else:
                    parsed = parsed.replace(var, GRAFANA_INTERVALS[bare])
            rules.append({"record": f"dashboard:panel_{pid}_{target.get('refId')}",
                          "expr": parsed})
    check_names(where, text)
    rules_out.write_text(yaml.safe_dump(
        {"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False))
    return len(rules)


def check_provisioning():
    sources = yaml.safe_load(DATASOURCES.read_text()).get("datasources", [])
    match = [s for s in sources if s.get("uid") == DATASOURCE["uid"]]
    if not match or match[0].get("type") != "prometheus":
        error(f"{rel(DATASOURCES)}: needs a prometheus datasource with uid `prometheus`")
    elif match[0].get("url") != "http://prometheus:9090":
        error(f"{rel(DATASOURCES)}: url should be http://prometheus:9090")
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text()).get("providers", [])
    if not any(p.get("type") == "file" and p.get("options", {}).get("path") for p in providers):
        error(f"{rel(DASHBOARD_PROVIDERS)}: needs a file provider with options.path")


def check_kubernetes_example():
    text = PROMETHEUS.read_text()
    block = re.search(r"^# --- kubernetes example ---\n(.*?)^# --- end of example ---$",
                      text, re.MULTILINE | re.DOTALL)
    if not block:
        error(f"{rel(PROMETHEUS)}: the Kubernetes example markers are missing")
        return
    configs = yaml.safe_load("\n".join(line[1:] for line in block.group(1).splitlines()))
    jobs = {c.get("job_name") for c in configs or []}
    if jobs != {"api", "worker"}:
        error(f"{rel(PROMETHEUS)}: the Kubernetes example must scrape jobs api and worker")
    for config in configs or []:
        sd = config.get("kubernetes_sd_configs") or [{}]
        if sd[0].get("role") not in {"pod", "endpoints", "endpointslice", "service"}:
            error(f"{rel(PROMETHEUS)}: Kubernetes example {config.get('job_name')}: "
                  "kubernetes_sd_configs needs a role")
        for relabel in config.get("relabel_configs", []):
            if not set(relabel) <= {"source_labels", "regex", "action", "target_label",
                                    "replacement", "separator"}:
                error(f"{rel(PROMETHEUS)}: Kubernetes example: unknown relabel field "
                      f"in {relabel}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dashboard-rules", type=pathlib.Path, required=True,
                        help="where to write the dashboard's queries as recording rules")
    args = parser.parse_args()
    alerts = check_alerts()
    queries = check_dashboard(args.dashboard_rules)
    check_provisioning()
    check_kubernetes_example()
    if errors:
        for e in errors:
            print(f"check_assets: {e}", file=sys.stderr)
        return 1
    print(f"check_assets: {len(KINDS)} metrics defined; {len(alerts)} alerts and "
          f"{queries} dashboard queries use only defined metrics and labels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
