//! The body of `burst-agent dashboard`, pure: a CloudWatch dashboard for one group, or one
//! across many sites, made from the metrics the agent publishes and the classic ELB's own.
//! [`body`] is the JSON CloudWatch's PutDashboard takes; the agent's `dashboard::apply` puts it.

use crate::config::Config;
use serde_json::{json, Value};

/// The dashboard's name: `burst-agent-GROUP`, or `burst-agent-sites` across several groups.
pub fn name(groups: &[String]) -> String {
    match groups {
        [one] => format!("burst-agent-{}", sanitize(one)),
        _ => "burst-agent-sites".into(),
    }
}

/// Dashboard names take letters, digits, `-` and `_` only.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn widget(
    x: u32,
    y: u32,
    w: u32,
    title: &str,
    region: &str,
    metrics: Vec<Value>,
    extra: Value,
) -> Value {
    let mut properties = json!({
        "title": title,
        "region": region,
        "view": "timeSeries",
        "stacked": false,
        "period": 60,
        "metrics": metrics,
    });
    if let (Some(p), Some(e)) = (properties.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    json!({"type": "metric", "x": x, "y": y, "width": w, "height": 6, "properties": properties})
}

/// The namespace `metric` lives in, given the site's `ns` (AWS's own stay as they are).
fn ns_of(ns: &str, metric: &str) -> String {
    if ns.starts_with("AWS/") {
        ns.to_string()
    } else {
        crate::metrics::Ns::of(metric).name(ns)
    }
}

/// A metric line: namespace, name, then dimension pairs, then its options.
fn line(ns: &str, metric: &str, dims: &[(&str, &str)], opts: Value) -> Value {
    let mut v = vec![json!(ns_of(ns, metric)), json!(metric)];
    for (k, val) in dims {
        v.push(json!(k));
        v.push(json!(val));
    }
    v.push(opts);
    Value::Array(v)
}

/// A SEARCH over every host of the group (one line per InstanceId).
fn per_host(ns: &str, group: &str, metric: &str, id: &str) -> Value {
    let ns = ns_of(ns, metric);
    json!([{
        "expression": format!(
            "SEARCH('{{{ns},Group,InstanceId}} MetricName=\"{metric}\" Group=\"{group}\"', 'Average', 60)"
        ),
        "id": id,
        "label": "",
    }])
}

/// What every widget of one group needs: the config, the group, its namespace, the region and
/// the row it starts at.
struct Ctx<'a> {
    cfg: &'a Config,
    group: &'a str,
    ns: &'a str,
    region: &'a str,
    y: u32,
}

/// Slaves in service, coming and going, against demand (Apache busy, load per CPU).
fn fleet_widget(c: &Ctx) -> Value {
    let (ns, group) = (c.ns, c.group);
    let g = [("Group", group)];
    widget(
        0,
        c.y,
        8,
        &format!("{group}: slaves in service, coming, going, against demand"),
        c.region,
        vec![
            line(
                ns,
                "SlavesInService",
                &g,
                json!({"stat": "Maximum", "label": "in service"}),
            ),
            line(
                ns,
                "SlavesComing",
                &g,
                json!({"stat": "Maximum", "label": "coming"}),
            ),
            line(
                ns,
                "SlavesGoing",
                &g,
                json!({"stat": "Maximum", "label": "going"}),
            ),
            line(
                ns,
                "ApacheBusyRatio",
                &g,
                json!({"stat": "Average", "yAxis": "right", "label": "Apache busy (mean)"}),
            ),
            line(
                ns,
                "LoadPerCpu",
                &g,
                json!({"stat": "Average", "yAxis": "right", "label": "load per CPU (mean)"}),
            ),
        ],
        json!({}),
    )
}

/// The burst cap used and remaining today.
fn cap_widget(c: &Ctx) -> Value {
    let (ns, group) = (c.ns, c.group);
    let g = [("Group", group)];
    widget(
        8,
        c.y,
        8,
        &format!("{group}: burst cap today"),
        c.region,
        vec![
            line(
                ns,
                "BurstCapUsed",
                &g,
                json!({"stat": "Maximum", "label": "used"}),
            ),
            line(
                ns,
                "BurstCapRemaining",
                &g,
                json!({"stat": "Minimum", "label": "remaining"}),
            ),
        ],
        json!({"yAxis": {"left": {"min": 0}}}),
    )
}

/// The policy's decisions, stacked by action.
fn decisions_widget(c: &Ctx) -> Value {
    let (ns, group) = (c.ns, c.group);
    widget(
        16,
        c.y,
        8,
        &format!("{group}: decisions"),
        c.region,
        ["scale_out", "scale_in", "hold"]
            .iter()
            .map(|a| {
                line(
                    ns,
                    "Decisions",
                    &[("Group", group), ("Action", a)],
                    json!({"stat": "Sum", "label": a}),
                )
            })
            .collect(),
        json!({"stacked": true}),
    )
}

/// The second row: load per CPU, Apache busy ratio and memory used, one line per host.
fn per_host_widgets(c: &Ctx) -> [Value; 3] {
    let (ns, group, region, y) = (c.ns, c.group, c.region, c.y);
    [
        widget(
            0,
            y + 6,
            8,
            &format!("{group}: load per CPU, each host"),
            region,
            vec![per_host(ns, group, "LoadPerCpu", "load")],
            json!({}),
        ),
        widget(
            8,
            y + 6,
            8,
            &format!("{group}: Apache busy ratio, each host"),
            region,
            vec![per_host(ns, group, "ApacheBusyRatio", "apache")],
            json!({}),
        ),
        widget(
            16,
            y + 6,
            8,
            &format!("{group}: memory used, each host"),
            region,
            vec![per_host(ns, group, "MemoryUsedRatio", "memory")],
            json!({}),
        ),
    ]
}

/// How long each hook took.
fn hooks_widget(c: &Ctx) -> Value {
    let (ns, group) = (c.ns, c.group);
    widget(
        0,
        c.y + 12,
        12,
        &format!("{group}: hook seconds"),
        c.region,
        [
            "pre_register",
            "content_sync",
            "pre_deregister",
            "post_terminate",
        ]
        .iter()
        .map(|h| {
            line(
                ns,
                "HookSeconds",
                &[("Group", group), ("Hook", h)],
                json!({"stat": "Maximum", "label": h}),
            )
        })
        .collect(),
        json!({}),
    )
}

/// The classic ELB's latency and errors, if there is one.
fn elb_widget(c: &Ctx) -> Option<Value> {
    let cfg = c.cfg;
    if cfg.elb.name.is_empty() {
        return None;
    }
    let elb = [("LoadBalancerName", cfg.elb.name.as_str())];
    Some(widget(
        12,
        c.y + 12,
        12,
        &format!("ELB {}: latency and errors", cfg.elb.name),
        c.region,
        vec![
            line(
                "AWS/ELB",
                "Latency",
                &elb,
                json!({"stat": "Average", "label": "latency (s)"}),
            ),
            line(
                "AWS/ELB",
                "HTTPCode_Backend_5XX",
                &elb,
                json!({"stat": "Sum", "yAxis": "right", "label": "backend 5xx"}),
            ),
            line(
                "AWS/ELB",
                "HTTPCode_ELB_5XX",
                &elb,
                json!({"stat": "Sum", "yAxis": "right", "label": "ELB 5xx"}),
            ),
            line(
                "AWS/ELB",
                "SurgeQueueLength",
                &elb,
                json!({"stat": "Maximum", "yAxis": "right", "label": "surge queue"}),
            ),
        ],
        json!({}),
    ))
}

/// The site probe's latency and failures, per URL, if any URL is probed.
fn probe_widget(c: &Ctx) -> Option<Value> {
    if c.cfg.sampling.probe_urls.is_empty() {
        return None;
    }
    let (ns, group) = (c.ns, c.group);
    let search = |metric: &str, stat: &str, id: &str, axis: &str| {
        let ns = ns_of(ns, metric);
        json!({
            "expression": format!(
                "SEARCH('{{{ns},Group,Url}} MetricName=\"{metric}\" Group=\"{group}\"', '{stat}', 60)"
            ),
            "id": id,
            "label": "",
            "yAxis": axis,
        })
    };
    Some(widget(
        0,
        c.y + 18,
        24,
        &format!("{group}: site probe (ms, left; failed, right)"),
        c.region,
        vec![
            json!([search("ProbeLatency", "Average", "probe_ms", "left")]),
            json!([search("ProbeFailed", "Maximum", "probe_failed", "right")]),
        ],
        json!({}),
    ))
}

/// The widgets of one group, from row `y`.
fn group_widgets(cfg: &Config, group: &str, y: u32, full: bool) -> Vec<Value> {
    let ns = cfg.metrics.namespace_for(group);
    let region = if cfg.aws.region.is_empty() {
        "us-east-1"
    } else {
        cfg.aws.region.as_str()
    };
    let c = Ctx {
        cfg,
        group,
        ns: ns.as_str(),
        region,
        y,
    };
    let mut out = vec![fleet_widget(&c), cap_widget(&c), decisions_widget(&c)];
    if full {
        out.extend(per_host_widgets(&c));
        out.push(hooks_widget(&c));
        out.extend(elb_widget(&c));
        out.extend(probe_widget(&c));
    }
    out
}

/// The dashboard body: every widget for one group; with several groups, a row of three
/// widgets (fleet against demand, burst cap, decisions) per site.
pub fn body(cfg: &Config, groups: &[String]) -> Value {
    let full = groups.len() == 1;
    let mut widgets = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let y = u32::try_from(i).unwrap_or(0) * if full { 18 } else { 6 };
        widgets.extend(group_widgets(cfg, g, y, full));
    }
    json!({ "widgets": widgets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let mut c = Config::default();
        c.agent.group = "golf".into();
        c.elb.name = "golf-elb".into();
        c.aws.region = "ap-northeast-1".into();
        c
    }

    /// Every metric a widget names, as (namespace, name), and every SEARCH expression.
    fn named(body: &Value) -> (Vec<(String, String)>, Vec<String>) {
        let mut lines = Vec::new();
        let mut searches = Vec::new();
        for w in body["widgets"].as_array().unwrap() {
            assert_eq!(w["type"], "metric");
            for m in w["properties"]["metrics"].as_array().unwrap() {
                let m = m.as_array().unwrap();
                if let Some(e) = m[0].get("expression") {
                    searches.push(e.as_str().unwrap().to_string());
                } else {
                    lines.push((m[0].as_str().unwrap().into(), m[1].as_str().unwrap().into()));
                }
            }
        }
        (lines, searches)
    }

    #[test]
    fn one_group_gets_fleet_cap_decisions_hosts_hooks_and_elb() {
        let b = body(&cfg(), &["golf".into()]);
        // Valid JSON CloudWatch reads: the string round-trips.
        let again: Value = serde_json::from_str(&b.to_string()).unwrap();
        assert_eq!(again, b);
        let (lines, searches) = named(&b);
        for m in [
            "SlavesInService",
            "SlavesComing",
            "SlavesGoing",
            "BurstCapUsed",
            "BurstCapRemaining",
            "Decisions",
            "HookSeconds",
        ] {
            // The agent's own numbers: in the namespace only the master can write.
            assert!(
                lines.contains(&("BurstAgent/golf/Agent".into(), m.into())),
                "{m}: {lines:?}"
            );
        }
        for m in ["ApacheBusyRatio", "LoadPerCpu"] {
            assert!(
                lines.contains(&("BurstAgent/golf".into(), m.into())),
                "{m}: {lines:?}"
            );
        }
        for m in ["Latency", "HTTPCode_Backend_5XX", "SurgeQueueLength"] {
            assert!(lines.contains(&("AWS/ELB".into(), m.into())), "{m}");
        }
        assert_eq!(searches.len(), 3);
        assert!(
            searches.iter().all(|s| s.contains("Group=\"golf\"")),
            "{searches:?}"
        );
        assert!(b.to_string().contains("ap-northeast-1"));
        assert_eq!(name(&["golf".into()]), "burst-agent-golf");
        // With probe URLs, a row for the probe, per URL.
        let mut c = cfg();
        c.sampling.probe_urls = vec!["https://golf.example.com/".into()];
        let (_, probe) = named(&body(&c, &["golf".into()]));
        assert_eq!(probe.len(), 5, "{probe:?}");
        assert!(probe
            .iter()
            .any(|s| s.contains("{BurstAgent/golf/Agent,Group,Url} MetricName=\"ProbeLatency\"")));
        // Widgets do not overlap.
        let mut cells = std::collections::BTreeSet::new();
        for w in b["widgets"].as_array().unwrap() {
            let (x, y, wd) = (
                w["x"].as_u64().unwrap(),
                w["y"].as_u64().unwrap(),
                w["width"].as_u64().unwrap(),
            );
            for cx in x..x + wd {
                assert!(cells.insert((cx, y)), "overlap at {cx},{y}");
            }
        }
    }

    #[test]
    fn many_groups_get_a_row_each() {
        let groups: Vec<String> = ["golf", "ramen", "tv.site"].map(String::from).to_vec();
        let b = body(&cfg(), &groups);
        let widgets = b["widgets"].as_array().unwrap();
        assert_eq!(widgets.len(), 9);
        for (i, g) in groups.iter().enumerate() {
            let row: Vec<&Value> = widgets.iter().filter(|w| w["y"] == json!(i * 6)).collect();
            assert_eq!(row.len(), 3);
            assert!(
                row.iter()
                    .all(|w| w.to_string().contains(&format!("\"{g}\""))),
                "{g}"
            );
        }
        assert_eq!(name(&groups), "burst-agent-sites");
        assert_eq!(name(&["tv.site".into()]), "burst-agent-tv-site");
    }
}
