//! Semantic checks: everything serde's types can't say. Every problem is reported, each as a
//! sentence that starts with its key path. Each section has its `check_SECTION` function and
//! [`validate`] runs every one, always: a new section's checks are one function and one line
//! there.

use super::{
    Config, Dur, Hook, Problem, Role, BRIDGE_PLACEHOLDERS, EVENT_PLACEHOLDERS, HOOK_PLACEHOLDERS,
};
use std::path::Path;
use std::time::Duration;

struct Checks {
    problems: Vec<Problem>,
}

impl Checks {
    fn fail(&mut self, path: &str, message: String) {
        self.problems.push(Problem {
            path: path.to_string(),
            location: None,
            message,
        });
    }
    fn require(&mut self, ok: bool, path: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(path, message());
        }
    }
    fn duration(&mut self, path: &str, d: Dur, min: Duration, max: Duration) {
        self.require(d.get() >= min && d.get() <= max, path, || {
            format!(
                "{path} must be between {} and {} (got {d})",
                Dur(min),
                Dur(max)
            )
        });
    }
    fn absolute(&mut self, path: &str, p: &Path) {
        self.require(p.is_absolute(), path, || {
            format!(
                "{path} must be an absolute path (got {:?})",
                p.display().to_string()
            )
        });
    }
    fn fraction(&mut self, path: &str, v: f64, max: f64) {
        self.require(v.is_finite() && v > 0.0 && v <= max, path, || {
            format!("{path} must be above 0 and at most {max} (got {v})")
        });
    }
    fn hook(&mut self, path: &str, hook: &Hook) {
        self.hook_with(path, hook, HOOK_PLACEHOLDERS)
    }
    fn hook_with(&mut self, path: &str, hook: &Hook, known: &[&str]) {
        let argv_path = format!("{path}.argv");
        match hook.argv.first() {
            None => self.fail(
                &argv_path,
                format!("{argv_path} must name a program to run"),
            ),
            Some(p) if p.trim().is_empty() => self.fail(
                &argv_path,
                format!("{argv_path}[0] must name a program, not be blank"),
            ),
            Some(_) => {}
        }
        for (i, arg) in hook.argv.iter().enumerate() {
            for name in placeholders(arg) {
                match name {
                    Ok(n) if known.contains(&n) => {}
                    Ok(n) => self.fail(
                        &argv_path,
                        format!(
                            "{argv_path}[{i}] uses unknown placeholder {{{n}}}; known: {}",
                            known
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    Err(()) => self.fail(
                        &argv_path,
                        format!("{argv_path}[{i}] has an unclosed '{{' in {arg:?}"),
                    ),
                }
            }
        }
        self.duration(
            &format!("{path}.timeout"),
            hook.timeout,
            Duration::from_secs(1),
            Duration::from_secs(6 * 3600),
        );
        self.require(hook.retries <= 10, &format!("{path}.retries"), || {
            format!("{path}.retries must be at most 10 (got {})", hook.retries)
        });
    }
}

/// The index of a shell's `-c` script that holds a placeholder, if any (`sh -c "... {detail}"`).
fn shell_script_with_placeholder(argv: &[String]) -> Option<usize> {
    let program = argv.first()?.rsplit('/').next()?;
    if !matches!(program, "sh" | "bash" | "dash" | "zsh" | "ksh" | "busybox") {
        return None;
    }
    let c = argv.iter().position(|a| a == "-c")?;
    let i = c + 1;
    argv.get(i)
        .filter(|script| !placeholders(script).is_empty())
        .map(|_| i)
}

/// Why `url` can't be probed, if it can't.
fn probe_url(url: &str) -> Result<(), String> {
    if url.len() > 255 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("at most 255 characters, no spaces".into());
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("the scheme must be http or https".into()),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err("no host".into()),
    }
}

/// The placeholder names in one hook argument (`{instance_id}` → `instance_id`).
pub(crate) fn placeholders(arg: &str) -> Vec<Result<&str, ()>> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push(Ok(&after[..close]));
                rest = &after[close + 1..];
            }
            None => {
                out.push(Err(()));
                break;
            }
        }
    }
    out
}

const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '#' | ':'))
}

const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

/// A bare word must be a level: `EnvFilter` would take `"loud"` as a target name and log nothing.
fn check_log_level(level: &str) -> Result<(), String> {
    let bare = !level.contains(['=', ',', '[', ':']);
    if bare && !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
        return Err("not a level".into());
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `arn:PARTITION:sns:REGION:ACCOUNT:NAME`, each part non-empty, the account 12 digits.
fn sns_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sns"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && !parts[5].is_empty()
        && parts[5]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Every semantic problem in `cfg`, in file order: each section checks itself (vector's
/// style), all of them always, so `check-config` shows every problem at once.
pub fn validate(cfg: &Config) -> Vec<Problem> {
    let mut c = Checks {
        problems: Vec::new(),
    };
    let acting = cfg.agent.role == Role::Master && !cfg.agent.dry_run;
    check_agent(&mut c, cfg);
    check_sampling(&mut c, cfg);
    check_metrics(&mut c, cfg);
    check_policy(&mut c, cfg);
    check_cap(&mut c, cfg);
    check_ledger(&mut c, cfg, acting);
    check_fleet(&mut c, cfg, acting);
    check_elb(&mut c, cfg, acting);
    check_hooks(&mut c, cfg);
    check_aws(&mut c, cfg);
    check_alarms(&mut c, cfg);
    check_events(&mut c, cfg);
    check_schedule(&mut c, cfg);
    check_log(&mut c, cfg);
    check_prices(&mut c, cfg);
    check_bridge(&mut c, cfg);
    c.problems
}

/// `[bridge]`: levels that each cost less than the one before, thresholds with room between
/// them, a load-proportional signal.
fn check_bridge(c: &mut Checks, cfg: &Config) {
    let b = &cfg.bridge;
    c.require(
        !b.costs.is_empty() && b.costs.len() <= 9,
        "bridge.costs",
        || {
            format!(
                "bridge.costs must list 1 to 9 levels' costs (got {})",
                b.costs.len()
            )
        },
    );
    let mut before = 1.0;
    for (i, cost) in b.costs.iter().enumerate() {
        let path = format!("bridge.costs[{i}]");
        c.require(
            cost.is_finite() && *cost > 0.0 && *cost < before,
            &path,
            || {
                format!(
                    "{path} (level {}) must be above 0 and below {before} (the level before it): \
                     a level costs less than the one below it (got {cost})",
                    i + 1
                )
            },
        );
        if cost.is_finite() && *cost > 0.0 && *cost < before {
            before = *cost;
        }
    }
    let share = b.master_only_share;
    c.require(
        share.is_finite() && (0.0..1.0).contains(&share),
        "bridge.master_only_share",
        || format!("bridge.master_only_share must be at least 0 and below 1 (got {share})"),
    );
    c.require(b.signal.forecastable(), "bridge.signal", || {
        format!(
            "bridge.signal must follow the load, \"apache_busy_ratio\" or \"load_per_cpu\" \
                 (got {:?})",
            b.signal.name()
        )
    });
    c.fraction("bridge.enter_utilization", b.enter_utilization, 10.0);
    c.fraction("bridge.exit_utilization", b.exit_utilization, 10.0);
    c.require(
        b.exit_utilization < b.enter_utilization,
        "bridge.exit_utilization",
        || {
            format!(
                "bridge.exit_utilization must be below bridge.enter_utilization, or a level \
                 would flap (got {} and {})",
                b.exit_utilization, b.enter_utilization
            )
        },
    );
    c.duration(
        "bridge.min_dwell",
        b.min_dwell,
        Duration::ZERO,
        Duration::from_secs(3600),
    );
    c.duration(
        "bridge.max_episode",
        b.max_episode,
        Duration::from_secs(60),
        Duration::from_secs(24 * 3600),
    );
    c.duration(
        "bridge.cooldown",
        b.cooldown,
        Duration::ZERO,
        Duration::from_secs(24 * 3600),
    );
    c.duration(
        "bridge.grace",
        b.grace,
        Duration::ZERO,
        Duration::from_secs(3600),
    );
}

/// `[prices]`: the monthly report's hourly prices.
fn check_prices(c: &mut Checks, cfg: &Config) {
    let p = &cfg.prices;
    for (kind, price) in &p.hourly {
        let path = format!("prices.hourly.{kind:?}");
        c.require(price.is_finite() && *price >= 0.0, &path, || {
            format!("{path} must be a price per instance-hour, 0 or more (got {price})")
        });
        // EC2's types are family.size (`c5.large`, `m7g.2xlarge`).
        c.require(
            kind.split_once('.')
                .is_some_and(|(f, s)| !f.is_empty() && !s.is_empty()),
            &path,
            || format!("{path}: {kind:?} is not an EC2 instance type such as \"c5.large\""),
        );
    }
    c.require(
        p.hourly.is_empty() || !p.currency.trim().is_empty(),
        "prices.currency",
        || "prices.currency must name the prices' currency (\"JPY\", \"USD\") when prices.hourly is set".into(),
    );
}

/// `[agent]`.
fn check_agent(c: &mut Checks, cfg: &Config) {
    c.require(valid_name(&cfg.agent.group), "agent.group", || {
        format!(
            "agent.group must be 1-255 characters of letters, digits and -_./#: (got {:?})",
            cfg.agent.group
        )
    });
    c.absolute("agent.state_dir", &cfg.agent.state_dir);
    let state_dir = cfg.agent.state_dir.to_string_lossy();
    let hooks = &cfg.hooks;
    let uses_state_dir = [&hooks.pre_register, hooks.content_sync()]
        .into_iter()
        .chain(hooks.pre_deregister.iter())
        .chain(hooks.post_terminate.iter())
        .chain(hooks.on_event.iter())
        .chain(hooks.on_bridge.iter())
        .any(|h| h.argv.iter().any(|a| a.contains("{state_dir}")));
    c.require(
        !uses_state_dir || !cfg.agent.state_dir.is_absolute() || super::plain_path(&state_dir),
        "agent.state_dir",
        || {
            format!(
                "agent.state_dir must be letters, digits and /._- only, at most 255 bytes: hooks \
                 use it as {{state_dir}} inside ssh's options (got {state_dir:?})"
            )
        },
    );
    if !cfg.agent.instance_id.is_empty() {
        c.require(
            valid_name(&cfg.agent.instance_id),
            "agent.instance_id",
            || {
                format!(
                    "agent.instance_id must be empty or 1-255 characters of letters, digits and \
                     -_./#: (got {:?})",
                    cfg.agent.instance_id
                )
            },
        );
    }
    c.duration(
        "agent.shutdown_timeout",
        cfg.agent.shutdown_timeout,
        SEC,
        10 * 60 * SEC,
    );
}

/// `[sampling]`.
fn check_sampling(c: &mut Checks, cfg: &Config) {
    let s = &cfg.sampling;
    c.duration("sampling.interval", s.interval, SEC, HOUR);
    c.require(
        !s.apache_process_names.is_empty(),
        "sampling.apache_process_names",
        || "sampling.apache_process_names must list at least one name (apache2, httpd)".into(),
    );
    for name in &s.apache_process_names {
        c.require(
            !name.is_empty() && name.len() <= 15,
            "sampling.apache_process_names",
            || {
                format!(
                "sampling.apache_process_names entry {name:?} must be 1-15 bytes: the kernel keeps \
                 only 15 bytes of a process name, so a longer one never matches"
            )
            },
        );
    }
    if !s.apache_pidfile.as_os_str().is_empty() {
        c.absolute("sampling.apache_pidfile", &s.apache_pidfile);
    }
    c.require(s.apache_max_workers >= 1, "sampling.apache_max_workers", || {
        "sampling.apache_max_workers must be at least 1 (Apache's MaxClients / MaxRequestWorkers)".into()
    });
    if !s.mod_status_url.is_empty() {
        c.require(
            s.mod_status_url.starts_with("http://"),
            "sampling.mod_status_url",
            || {
                format!(
                    "sampling.mod_status_url must be a plain http:// URL on this host, like \
                 \"http://127.0.0.1/server-status?auto\" (got {:?})",
                    s.mod_status_url
                )
            },
        );
    }
    c.require(
        !s.mod_status_timeout.is_zero() && s.mod_status_timeout < s.interval,
        "sampling.mod_status_timeout",
        || {
            format!(
                "sampling.mod_status_timeout must be above 0 and below sampling.interval ({} >= {})",
                s.mod_status_timeout, s.interval
            )
        },
    );
    for p in &s.disk_paths {
        c.absolute("sampling.disk_paths", p);
    }
    for (i, url) in s.probe_urls.iter().enumerate() {
        if let Err(why) = probe_url(url) {
            c.fail(
                &format!("sampling.probe_urls[{i}]"),
                format!(
                    "sampling.probe_urls[{i}] must be an http:// or https:// URL with a host, like \
                     \"http://my-elb-123.eu-west-1.elb.amazonaws.com/\" ({why}; got {url:?})"
                ),
            );
        }
    }
    c.require(s.probe_urls.len() <= 10, "sampling.probe_urls", || {
        format!(
            "sampling.probe_urls may list at most 10 URLs (got {})",
            s.probe_urls.len()
        )
    });
    c.duration("sampling.probe_interval", s.probe_interval, 5 * SEC, HOUR);
    c.require(
        !s.probe_timeout.is_zero()
            && s.probe_timeout < s.probe_interval
            && s.probe_timeout.get() <= Duration::from_secs(60),
        "sampling.probe_timeout",
        || {
            format!(
                "sampling.probe_timeout must be above 0, at most 1m, and below \
                 sampling.probe_interval (got {}, interval {})",
                s.probe_timeout, s.probe_interval
            )
        },
    );
}

/// `[metrics]`.
fn check_metrics(c: &mut Checks, cfg: &Config) {
    let m = &cfg.metrics;
    c.require(
        m.namespace.is_empty() || (valid_name(&m.namespace) && !m.namespace.starts_with("AWS/")),
        "metrics.namespace",
        || {
            format!(
                "metrics.namespace must be 1-255 characters of letters, digits and -_./#: and not \
                 start with \"AWS/\" (got {:?})",
                m.namespace
            )
        },
    );
    c.duration("metrics.publish_interval", m.publish_interval, SEC, HOUR);
    c.duration(
        "metrics.fleet_read_interval",
        m.fleet_read_interval,
        SEC,
        HOUR,
    );
    c.require(
        matches!(m.storage_resolution, 1 | 60),
        "metrics.storage_resolution",
        || {
            format!(
                "metrics.storage_resolution must be 1 (high resolution) or 60 (standard) (got {})",
                m.storage_resolution
            )
        },
    );
    c.require(
        m.stale_after > m.publish_interval,
        "metrics.stale_after",
        || {
            format!(
            "metrics.stale_after must be longer than metrics.publish_interval ({} <= {}), or every \
             host would look stale",
            m.stale_after, m.publish_interval
        )
        },
    );
    c.require(m.buffer_limit >= 1, "metrics.buffer_limit", || {
        "metrics.buffer_limit must be at least 1".into()
    });
}

/// `[policy]`: each group of related keys checks itself, in file order.
fn check_policy(c: &mut Checks, cfg: &Config) {
    check_policy_signals(c, cfg);
    check_policy_forecast(c, cfg);
    check_policy_targets(c, cfg);
    check_policy_thresholds(c, cfg);
    check_policy_slaves(c, cfg);
    check_policy_holds(c, cfg);
    check_policy_acute_and_stale(c, cfg);
}

/// `policy.evaluation_interval` and `policy.signals`, with what probe_latency needs.
fn check_policy_signals(c: &mut Checks, cfg: &Config) {
    let p = &cfg.policy;
    let s = &cfg.sampling;
    c.duration(
        "policy.evaluation_interval",
        p.evaluation_interval,
        SEC,
        HOUR,
    );
    c.require(!p.signals.is_empty(), "policy.signals", || {
        "policy.signals must list at least one of load_per_cpu, apache_busy_ratio, \
         memory_used_ratio, probe_latency"
            .into()
    });
    if p.signals.contains(&crate::model::Signal::ProbeLatency) {
        c.require(!s.probe_urls.is_empty(), "policy.signals", || {
            "policy.signals lists probe_latency, so sampling.probe_urls must list the URLs to probe"
                .into()
        });
        c.require(
            p.mode == super::PolicyMode::TargetTracking,
            "policy.signals",
            || {
                "policy.signals: probe_latency is read in milliseconds against \
                 policy.targets.probe_latency_ms, so it needs mode = \"target_tracking\""
                    .into()
            },
        );
        c.require(
            s.probe_interval < p.stale_after,
            "sampling.probe_interval",
            || {
                format!(
                    "sampling.probe_interval must be shorter than policy.stale_after ({} >= {}), \
                     or the probe_latency signal would always be stale",
                    s.probe_interval, p.stale_after
                )
            },
        );
    }
}

/// `policy.forecast.*`.
fn check_policy_forecast(c: &mut Checks, cfg: &Config) {
    let f = &cfg.policy.forecast;
    c.duration("policy.forecast.window", f.window, 60 * SEC, HOUR);
    c.duration("policy.forecast.lead_time", f.lead_time, 10 * SEC, HOUR);
    c.require(
        f.max_factor.is_finite() && (1.0..=10.0).contains(&f.max_factor),
        "policy.forecast.max_factor",
        || {
            format!(
                "policy.forecast.max_factor must be 1-10 (got {})",
                f.max_factor
            )
        },
    );
}

/// `policy.targets.*` and `policy.tolerance`: each signal's goal, and no signal listed twice.
fn check_policy_targets(c: &mut Checks, cfg: &Config) {
    let p = &cfg.policy;
    c.require(
        p.targets.probe_latency_ms.is_finite()
            && (1.0..=600_000.0).contains(&p.targets.probe_latency_ms),
        "policy.targets.probe_latency_ms",
        || {
            format!(
                "policy.targets.probe_latency_ms must be 1-600000 milliseconds (got {})",
                p.targets.probe_latency_ms
            )
        },
    );
    let mut seen = std::collections::BTreeSet::new();
    for sig in &p.signals {
        c.require(seen.insert(*sig), "policy.signals", || {
            format!("policy.signals lists {} twice", sig.name())
        });
    }
    c.fraction("policy.targets.load_per_cpu", p.targets.load_per_cpu, 100.0);
    c.fraction(
        "policy.targets.apache_busy_ratio",
        p.targets.apache_busy_ratio,
        1.0,
    );
    c.fraction(
        "policy.targets.memory_used_ratio",
        p.targets.memory_used_ratio,
        1.0,
    );
    c.require(
        p.tolerance.is_finite() && (0.0..1.0).contains(&p.tolerance),
        "policy.tolerance",
        || {
            format!(
                "policy.tolerance must be at least 0 and below 1 (got {})",
                p.tolerance
            )
        },
    );
}

/// `policy.scale_out.*`, `policy.scale_in.*` and the step limits.
fn check_policy_thresholds(c: &mut Checks, cfg: &Config) {
    let p = &cfg.policy;
    c.fraction("policy.scale_out.threshold", p.scale_out.threshold, 100.0);
    c.require(
        p.scale_in.threshold.is_finite() && p.scale_in.threshold >= 0.0,
        "policy.scale_in.threshold",
        || {
            format!(
                "policy.scale_in.threshold must be 0 or more (got {})",
                p.scale_in.threshold
            )
        },
    );
    c.require(
        p.scale_in.threshold < p.scale_out.threshold,
        "policy.scale_in.threshold",
        || {
            format!(
                "policy.scale_in.threshold must be below policy.scale_out.threshold ({} >= {})",
                p.scale_in.threshold, p.scale_out.threshold
            )
        },
    );
    c.duration(
        "policy.scale_out.sustain",
        p.scale_out.sustain,
        Duration::ZERO,
        DAY,
    );
    c.duration(
        "policy.scale_in.sustain",
        p.scale_in.sustain,
        Duration::ZERO,
        DAY,
    );
    for (path, v) in [
        ("policy.scale_out.step", p.scale_out.step),
        ("policy.scale_in.step", p.scale_in.step),
        ("policy.max_step_out", p.max_step_out),
        ("policy.max_step_in", p.max_step_in),
    ] {
        c.require(v >= 1, path, || {
            format!("{path} must be at least 1 (got {v})")
        });
    }
}

/// `policy.min_slaves` and `policy.max_slaves`.
fn check_policy_slaves(c: &mut Checks, cfg: &Config) {
    let p = &cfg.policy;
    c.require(p.min_slaves <= p.max_slaves, "policy.min_slaves", || {
        format!(
            "policy.min_slaves must be at most policy.max_slaves ({} > {})",
            p.min_slaves, p.max_slaves
        )
    });
    c.require(p.max_slaves <= 1000, "policy.max_slaves", || {
        format!(
            "policy.max_slaves must be at most 1000 (got {})",
            p.max_slaves
        )
    });
}

/// Cooldowns, stabilization, lifetimes and the cap's keep/guard durations.
fn check_policy_holds(c: &mut Checks, cfg: &Config) {
    let p = &cfg.policy;
    for (path, d) in [
        ("policy.scale_out_cooldown", p.scale_out_cooldown),
        ("policy.scale_in_cooldown", p.scale_in_cooldown),
        ("policy.scale_out_stabilization", p.scale_out_stabilization),
        ("policy.scale_in_stabilization", p.scale_in_stabilization),
        ("policy.min_lifetime", p.min_lifetime),
        ("policy.cap_unit_value", p.cap_unit_value),
    ] {
        c.duration(path, d, Duration::ZERO, DAY);
    }
    c.duration(
        "policy.max_kept_per_day",
        p.max_kept_per_day,
        Duration::ZERO,
        DAY * 7,
    );
    c.require(p.cap_keep_for.is_none(), "policy.cap_keep_for", || {
        "policy.cap_keep_for was replaced by policy.cap_unit_value (what one burst-cap unit is \
         worth in instance-time; an unneeded slave is kept while it has been unneeded for less \
         than its relaunch cost) and policy.max_kept_per_day: remove it (docs/how-it-decides.md, \
         step 6)"
            .to_string()
    });
    c.duration(
        "policy.midnight_guard",
        p.midnight_guard,
        Duration::ZERO,
        HOUR,
    );
}

/// `policy.acute_factor` and `policy.stale_after`.
fn check_policy_acute_and_stale(c: &mut Checks, cfg: &Config) {
    let p = &cfg.policy;
    c.require(
        p.acute_factor.is_finite() && (1.0..=10.0).contains(&p.acute_factor),
        "policy.acute_factor",
        || {
            format!(
                "policy.acute_factor must be 1 to 10 (times a signal's goal; got {})",
                p.acute_factor
            )
        },
    );
    c.require(
        p.stale_after >= p.evaluation_interval,
        "policy.stale_after",
        || {
            format!(
                "policy.stale_after must be at least policy.evaluation_interval ({} < {})",
                p.stale_after, p.evaluation_interval
            )
        },
    );
}

/// `[cap]`.
fn check_cap(c: &mut Checks, cfg: &Config) {
    let cap = &cfg.cap;
    if let Err(e) = jiff::tz::TimeZone::get(&cap.time_zone) {
        c.fail(
            "cap.time_zone",
            format!(
                "cap.time_zone must be an IANA time zone name like \"Asia/Tokyo\" (got {:?}: {e})",
                cap.time_zone
            ),
        );
    }
    c.require(cap.daily_limit <= 1000, "cap.daily_limit", || {
        format!(
            "cap.daily_limit must be at most 1000 (got {})",
            cap.daily_limit
        )
    });
    c.require(
        cap.daily_instance_hours.is_finite() && cap.daily_instance_hours >= 0.0,
        "cap.daily_instance_hours",
        || {
            format!(
                "cap.daily_instance_hours must be 0 (off) or more (got {})",
                cap.daily_instance_hours
            )
        },
    );
}

/// `[ledger]`: a live master spends the guarantee only through the shared table.
fn check_ledger(c: &mut Checks, cfg: &Config, acting: bool) {
    let l = &cfg.ledger;
    if l.table.is_empty() {
        c.require(!acting, "ledger.table", || {
            "ledger.table must name the site's DynamoDB table for a master that is not in dry \
             run: the day's burst units and the lease live there, so a copy of this host or a \
             restored state directory cannot spend them again. Create it once per account with \
             `burst-agent table create burst-agent` (as an operator, not the master's role), \
             then set table = \"burst-agent\""
                .into()
        });
    } else {
        // DynamoDB's rule for table names.
        c.require(
            (3..=255).contains(&l.table.len())
                && l.table
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.')),
            "ledger.table",
            || {
                format!(
                    "ledger.table must be 3-255 characters of letters, digits and _-. (got {:?})",
                    l.table
                )
            },
        );
    }
    c.duration("ledger.lease_duration", l.lease_duration, 10 * SEC, HOUR);
}

/// `[fleet]`.
fn check_fleet(c: &mut Checks, cfg: &Config, acting: bool) {
    let f = &cfg.fleet;
    match (&f.launch_template, f.ami.is_empty()) {
        (Some(_), false) => c.fail(
            "fleet.ami",
            "fleet.ami and fleet.launch_template are both set: use one".into(),
        ),
        (None, true) if acting => c.fail(
            "fleet.ami",
            "fleet.ami or fleet.launch_template must be set for a master that is not in dry-run"
                .into(),
        ),
        _ => {}
    }
    if let Some(lt) = &f.launch_template {
        c.require(
            lt.id.is_empty() != lt.name.is_empty(),
            "fleet.launch_template",
            || "fleet.launch_template must set exactly one of id and name".into(),
        );
    }
    if !f.ami.is_empty() {
        c.require(f.ami.starts_with("ami-"), "fleet.ami", || {
            format!(
                "fleet.ami must be an AMI id like \"ami-0123456789abcdef0\" (got {:?})",
                f.ami
            )
        });
    }
    for id in &f.subnet_ids {
        c.require(id.starts_with("subnet-"), "fleet.subnet_ids", || {
            format!("fleet.subnet_ids entry {id:?} must look like \"subnet-…\"")
        });
    }
    for id in &f.security_group_ids {
        c.require(id.starts_with("sg-"), "fleet.security_group_ids", || {
            format!("fleet.security_group_ids entry {id:?} must look like \"sg-…\"")
        });
    }
    if let Some(p) = &f.user_data_file {
        c.absolute("fleet.user_data_file", p);
    }
    for k in f.tags.keys() {
        c.require(
            !k.is_empty()
                && !k.starts_with("aws:")
                && !k.starts_with("burst-agent:")
                && k.len() <= 128,
            "fleet.tags",
            || {
                format!(
                    "fleet.tags key {k:?} must be 1-128 characters and not start with \"aws:\" or \
                     \"burst-agent:\" (the agent writes those)"
                )
            },
        );
    }
    for (i, t) in f.fallback_instance_types.iter().enumerate() {
        c.require(
            !t.is_empty()
                && t.len() <= 64
                && t.contains('.')
                && t.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '-')
                }),
            "fleet.fallback_instance_types",
            || {
                format!(
                    "fleet.fallback_instance_types[{i}] must be an instance type like \
                     \"m5.large\" (got {t:?})"
                )
            },
        );
        c.require(
            *t != f.instance_type && !f.fallback_instance_types[..i].contains(t),
            "fleet.fallback_instance_types",
            || format!("fleet.fallback_instance_types[{i}] {t:?} is already tried before it"),
        );
    }
    c.duration("fleet.boot_timeout", f.boot_timeout, 30 * SEC, HOUR);
    c.require(f.warm_pool <= 100, "fleet.warm_pool", || {
        format!(
            "fleet.warm_pool must be at most 100 stopped slaves (got {}); 0 turns it off",
            f.warm_pool
        )
    });
    // At least one sampling of demand after a scale-in; at most a week (a stopped slave's
    // content and patches age, and its volume is paid for).
    c.duration(
        "fleet.warm_pool_max_age",
        f.warm_pool_max_age,
        10 * 60 * SEC,
        7 * DAY,
    );
}

/// `[elb]`.
fn check_elb(c: &mut Checks, cfg: &Config, acting: bool) {
    let e = &cfg.elb;
    if acting {
        c.require(!e.name.is_empty(), "elb.name", || {
            "elb.name must name the classic load balancer for a master that is not in dry-run"
                .into()
        });
    }
    c.duration(
        "elb.draining_timeout",
        e.draining_timeout,
        Duration::ZERO,
        HOUR,
    );
    c.duration("elb.register_timeout", e.register_timeout, SEC, HOUR);
}

/// `[hooks]`.
fn check_hooks(c: &mut Checks, cfg: &Config) {
    let h = &cfg.hooks;
    c.hook("hooks.pre_register", &h.pre_register);
    if let Some(hook) = &h.content_sync {
        c.hook("hooks.content_sync", hook);
    }
    c.duration(
        "hooks.content_sync_interval",
        h.content_sync_interval,
        10 * SEC,
        DAY,
    );
    if let Some(hook) = &h.content_check {
        c.hook("hooks.content_check", hook);
    }
    if let Some(p) = &h.content_source {
        c.require(p.is_absolute(), "hooks.content_source", || {
            format!("{} is not an absolute path", p.display())
        });
    }
    if let Some(s) = &h.content_sentinel {
        c.require(
            !s.is_empty() && !s.contains('/') && s != "." && s != "..",
            "hooks.content_sentinel",
            || format!("{s:?} must be a file name in the content source (no '/')"),
        );
    }
    if let Some(hook) = &h.pre_deregister {
        c.hook("hooks.pre_deregister", hook);
    }
    if let Some(hook) = &h.post_terminate {
        c.hook("hooks.post_terminate", hook);
    }
    if let Some(hook) = &h.on_event {
        c.hook_with("hooks.on_event", hook, EVENT_PLACEHOLDERS);
        // `{detail}` carries text from outside (an instance's tags): never inside a shell's
        // script, where it would run as code.
        if let Some(i) = shell_script_with_placeholder(&hook.argv) {
            c.fail(
                "hooks.on_event.argv",
                format!(
                    "hooks.on_event.argv[{i}] is a shell script with placeholders in it: their \
                     values (an event's detail names instance tags) would run as shell code; pass \
                     them as arguments after the script (\"$1\") or read BURST_AGENT_DETAIL"
                ),
            );
        }
    }
    if let Some(hook) = &h.on_bridge {
        c.hook_with("hooks.on_bridge", hook, BRIDGE_PLACEHOLDERS);
        // A level waits for the run before it: a hung switch must not hold one for long.
        let most = (hook.timeout.get())
            .saturating_mul(hook.retries.saturating_add(1))
            .saturating_add(hook.retry_delay.get().saturating_mul(hook.retries));
        c.require(
            most <= Duration::from_secs(300),
            "hooks.on_bridge.timeout",
            || {
                format!(
                    "hooks.on_bridge.timeout with its retries may take {} (at most 5m): the \
                     level waits for it; \"30s\" and 1 retry suit a switch of flag files",
                    Dur(most)
                )
            },
        );
    }
}

/// `[aws]`.
fn check_aws(c: &mut Checks, cfg: &Config) {
    let a = &cfg.aws;
    c.require(
        (1..=1000).contains(&a.max_calls_per_second),
        "aws.max_calls_per_second",
        || {
            format!(
                "aws.max_calls_per_second must be 1-1000 (got {})",
                a.max_calls_per_second
            )
        },
    );
    c.duration("aws.call_timeout", a.call_timeout, SEC, 10 * 60 * SEC);
    c.require(
        (1..=10).contains(&a.max_attempts),
        "aws.max_attempts",
        || format!("aws.max_attempts must be 1-10 (got {})", a.max_attempts),
    );
    if !a.endpoint_url.is_empty() {
        c.require(
            a.endpoint_url.starts_with("http://") || a.endpoint_url.starts_with("https://"),
            "aws.endpoint_url",
            || {
                format!(
                    "aws.endpoint_url must start with http:// or https:// (got {:?})",
                    a.endpoint_url
                )
            },
        );
    }
}

/// `[alarms]`.
fn check_alarms(c: &mut Checks, cfg: &Config) {
    let al = &cfg.alarms;
    for (key, arns) in [
        ("alarms.alarm_actions", &al.alarm_actions),
        ("alarms.ok_actions", &al.ok_actions),
    ] {
        for (i, arn) in arns.iter().enumerate() {
            c.require(sns_arn(arn), &format!("{key}[{i}]"), || {
                format!(
                    "{key}[{i}] must be an SNS topic ARN like \
                     \"arn:aws:sns:us-east-1:123456789012:ops\" (got {arn:?})"
                )
            });
        }
    }
    c.require(
        al.disk_used_percent > 0.0 && al.disk_used_percent <= 100.0,
        "alarms.disk_used_percent",
        || {
            format!(
                "alarms.disk_used_percent must be above 0 and at most 100 (got {})",
                al.disk_used_percent
            )
        },
    );
    c.require(
        al.memory_used_percent > 0.0 && al.memory_used_percent <= 100.0,
        "alarms.memory_used_percent",
        || {
            format!(
                "alarms.memory_used_percent must be above 0 and at most 100 (got {})",
                al.memory_used_percent
            )
        },
    );
    // The old ratio key is carried over (Config::carry_renamed_keys); both written and
    // disagreeing cannot be.
    if let Some(r) = al.memory_used_ratio {
        c.require(
            (r * 100.0 - al.memory_used_percent).abs() < 1e-6,
            "alarms.memory_used_ratio",
            || {
                format!(
                    "alarms.memory_used_ratio ({r}) and alarms.memory_used_percent ({}) disagree: \
                     memory_used_ratio is the old name (0.95 is 95.0); remove it",
                    al.memory_used_percent
                )
            },
        );
    }
    c.duration(
        "alarms.apache_saturated_for",
        al.apache_saturated_for,
        60 * SEC,
        24 * 3600 * SEC,
    );
    c.duration(
        "alarms.heartbeat_missing_for",
        al.heartbeat_missing_for,
        60 * SEC,
        24 * 3600 * SEC,
    );
    c.duration(
        "alarms.bridge_on_for",
        al.bridge_on_for,
        300 * SEC,
        24 * 3600 * SEC,
    );
    c.require(
        al.probe_latency_ms.is_finite() && (1.0..=600_000.0).contains(&al.probe_latency_ms),
        "alarms.probe_latency_ms",
        || {
            format!(
                "alarms.probe_latency_ms must be 1-600000 milliseconds (got {})",
                al.probe_latency_ms
            )
        },
    );
    for (i, name) in al.disabled.iter().enumerate() {
        c.require(
            crate::alarms::KINDS.contains(&name.as_str()),
            &format!("alarms.disabled[{i}]"),
            || {
                format!(
                    "alarms.disabled[{i}] must be one of {} (got {name:?})",
                    crate::alarms::KINDS.join(", ")
                )
            },
        );
    }
}

/// `[events]`.
fn check_events(c: &mut Checks, cfg: &Config) {
    let ev = &cfg.events;
    if !ev.topic_arn.is_empty() {
        c.require(sns_arn(&ev.topic_arn), "events.topic_arn", || {
            format!(
                "events.topic_arn must be empty or an SNS topic ARN like \
                 \"arn:aws:sns:us-east-1:123456789012:ops\" (got {:?})",
                ev.topic_arn
            )
        });
        c.require(!ev.topic_arn.ends_with(".fifo"), "events.topic_arn", || {
            format!(
                "events.topic_arn must be a standard topic, not a FIFO one (got {:?})",
                ev.topic_arn
            )
        });
        let region = ev.topic_arn.split(':').nth(3).unwrap_or_default();
        c.require(
            cfg.aws.region.is_empty() || region == cfg.aws.region,
            "events.topic_arn",
            || {
                format!(
                    "events.topic_arn is in {region:?} but the agent calls AWS in aws.region \
                     {:?}: use a topic in the agent's region",
                    cfg.aws.region
                )
            },
        );
    }
    c.duration("events.window", ev.window, 60 * SEC, DAY);
    c.require(
        (1..=1000).contains(&ev.max_per_hour),
        "events.max_per_hour",
        || {
            format!(
                "events.max_per_hour must be 1-1000 (got {})",
                ev.max_per_hour
            )
        },
    );
    for (i, name) in ev.disabled.iter().enumerate() {
        c.require(
            crate::events::EventKind::parse(name).is_some(),
            &format!("events.disabled[{i}]"),
            || {
                format!(
                    "events.disabled[{i}] must be one of {} (got {name:?})",
                    crate::events::EVENT_KINDS.map(|k| k.name()).join(", ")
                )
            },
        );
    }
}

/// `[[schedule]]`.
fn check_schedule(c: &mut Checks, cfg: &Config) {
    for (i, e) in cfg.schedule.iter().enumerate() {
        if let Err(problems) = super::schedule::plan(i, e) {
            for (key, message) in problems {
                c.fail(&key, message);
            }
        }
    }
}

/// `[log]`.
fn check_log(c: &mut Checks, cfg: &Config) {
    if let Err(why) = check_log_level(&cfg.log.level) {
        c.fail(
            "log.level",
            format!(
                "log.level must be a level (error, warn, info, debug, trace, off) or a filter like \
                 \"burst_agent=debug,info\" (got {:?}: {why})",
                cfg.log.level
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LaunchTemplate, Signal};

    fn paths(cfg: &Config) -> Vec<String> {
        validate(cfg).into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn defaults_are_valid_for_a_dry_run() {
        let mut dry = Config::default();
        dry.agent.dry_run = true;
        assert_eq!(validate(&dry), vec![]);
    }

    #[test]
    fn events_and_probe_keys_are_named_when_wrong() {
        let mut c = Config::default();
        c.agent.dry_run = true;
        c.events.topic_arn = "arn:aws:sqs:us-east-1:123456789012:ops".into();
        c.events.window = Dur::secs(5);
        c.events.max_per_hour = 0;
        c.events.disabled = vec!["scale_out".into(), "scaled_out".into()];
        c.hooks.on_event = Some(Hook {
            argv: vec!["/bin/page".into(), "{event}".into(), "{private_ip}".into()],
            ..Hook::default()
        });
        c.sampling.probe_urls = vec![
            "http://ok.example.com/".into(),
            "ftp://site.example.com/".into(),
            "http:///no-host".into(),
        ];
        c.sampling.probe_timeout = Dur::secs(60);
        c.policy.targets.probe_latency_ms = 0.0;
        c.alarms.probe_latency_ms = f64::NAN;
        let problems = validate(&c);
        let got: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "events.topic_arn",
            "events.window",
            "events.max_per_hour",
            "events.disabled[1]",
            "hooks.on_event.argv",
            "sampling.probe_urls[1]",
            "sampling.probe_urls[2]",
            "sampling.probe_timeout",
            "policy.targets.probe_latency_ms",
            "alarms.probe_latency_ms",
        ] {
            assert!(got.contains(&want), "missing {want} in {problems:#?}");
        }
        for fine in ["events.disabled[0]", "sampling.probe_urls[0]"] {
            assert!(!got.contains(&fine), "{fine} is fine: {problems:#?}");
        }
        // {private_ip} means nothing to an event; {event} is fine.
        let hook = problems
            .iter()
            .find(|p| p.path == "hooks.on_event.argv")
            .unwrap();
        assert!(hook.message.contains("{private_ip}"), "{}", hook.message);

        // A shell script with a placeholder inside; a FIFO topic; a topic in another region.
        let mut c = Config::default();
        c.agent.dry_run = true;
        c.aws.region = "eu-west-1".into();
        c.events.topic_arn = "arn:aws:sns:us-east-1:123456789012:ops.fifo".into();
        c.hooks.on_event = Some(Hook {
            argv: vec!["/bin/sh".into(), "-c".into(), "page-ops {detail}".into()],
            ..Hook::default()
        });
        let problems = validate(&c);
        let msgs: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("hooks.on_event.argv[2] is a shell script")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("not a FIFO one")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("is in \"us-east-1\" but")),
            "{msgs:#?}"
        );
        // Placeholders as the script's arguments are fine.
        c.hooks.on_event = Some(Hook {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "page-ops \"$1\"".into(),
                "x".into(),
                "{detail}".into(),
            ],
            ..Hook::default()
        });
        c.events.topic_arn = "arn:aws:sns:eu-west-1:123456789012:ops".into();
        assert_eq!(validate(&c), vec![]);

        // The probe_latency signal needs URLs, and target tracking.
        let mut c = Config::default();
        c.agent.dry_run = true;
        c.policy.signals = vec![Signal::ProbeLatency];
        c.policy.mode = crate::config::PolicyMode::Threshold;
        let problems = validate(&c);
        let sig: Vec<&str> = problems
            .iter()
            .filter(|p| p.path == "policy.signals")
            .map(|p| p.message.as_str())
            .collect();
        assert_eq!(sig.len(), 2, "{problems:#?}");
        c.sampling.probe_urls = vec!["https://site.example.com/".into()];
        c.policy.mode = crate::config::PolicyMode::TargetTracking;
        assert_eq!(validate(&c), vec![]);
    }

    #[test]
    fn reports_every_problem_not_just_the_first() {
        let mut c = Config::default();
        c.agent.dry_run = true;
        c.agent.state_dir = "relative/dir".into();
        c.policy.min_slaves = 9;
        c.policy.max_slaves = 3;
        c.cap.time_zone = "Mars/Olympus_Mons".into();
        c.metrics.storage_resolution = 5;
        c.hooks.pre_register.argv = vec![];
        c.hooks.content_sync = Some(crate::config::Hook {
            argv: vec!["rsync".into(), "{privat_ip}:/var/www".into()],
            ..c.hooks.pre_register.clone()
        });
        c.policy.signals = vec![Signal::LoadPerCpu, Signal::LoadPerCpu];
        c.sampling.interval = Dur::secs(0);
        c.log.level = "loud".into();
        let got = paths(&c);
        for want in [
            "agent.state_dir",
            "policy.min_slaves",
            "cap.time_zone",
            "metrics.storage_resolution",
            "hooks.pre_register.argv",
            "hooks.content_sync.argv",
            "policy.signals",
            "sampling.interval",
            "log.level",
        ] {
            assert!(got.iter().any(|g| g == want), "missing {want} in {got:?}");
        }
    }

    #[test]
    fn prices_are_instance_types_with_prices_in_a_named_currency() {
        let mut c = Config::default();
        c.agent.dry_run = true;
        c.prices.hourly.insert("c5.large".into(), 15.3);
        assert_eq!(paths(&c), ["prices.currency"]);
        c.prices.currency = "JPY".into();
        assert!(paths(&c).is_empty());
        c.prices.hourly.insert("c5".into(), 1.0);
        c.prices.hourly.insert("m7g.large".into(), f64::NAN);
        assert_eq!(
            paths(&c),
            ["prices.hourly.\"c5\"", "prices.hourly.\"m7g.large\""]
        );
    }

    #[test]
    fn bridge_levels_cost_less_each_and_its_thresholds_leave_a_band() {
        let mut c = Config::default();
        c.agent.dry_run = true;
        assert!(paths(&c).is_empty(), "{:?}", validate(&c));
        c.bridge.costs = vec![0.3, 0.3, 1.5];
        c.bridge.exit_utilization = 0.81;
        c.bridge.signal = crate::config::Signal::MemoryUsedRatio;
        c.bridge.master_only_share = 1.0;
        c.bridge.max_episode = Dur::secs(10);
        assert_eq!(
            paths(&c),
            [
                "bridge.costs[1]",
                "bridge.costs[2]",
                "bridge.master_only_share",
                "bridge.signal",
                "bridge.exit_utilization",
                "bridge.max_episode"
            ]
        );
        let p = validate(&c);
        assert!(
            p[0].message
                .contains("(level 2) must be above 0 and below 0.3"),
            "{}",
            p[0].message
        );
        c.bridge = Default::default();
        c.bridge.costs.clear();
        assert_eq!(paths(&c), ["bridge.costs"]);
        // A switch whose retries could hold a level for 20 minutes (the hooks' 10m default).
        c.bridge = Default::default();
        c.hooks.on_bridge = Some(Hook {
            argv: vec!["/usr/lib/burst-agent/bridge-level".into(), "{level}".into()],
            ..Hook::default()
        });
        assert_eq!(paths(&c), ["hooks.on_bridge.timeout"]);
        c.hooks.on_bridge.as_mut().unwrap().timeout = Dur::secs(30);
        assert!(paths(&c).is_empty(), "{:?}", validate(&c));
    }

    #[test]
    fn thresholds_must_be_ordered() {
        let mut c = Config::default();
        c.agent.dry_run = true;
        c.policy.scale_in.threshold = 0.9;
        let p = validate(&c);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].message,
            "policy.scale_in.threshold must be below policy.scale_out.threshold (0.9 >= 0.8)"
        );
        c.policy.scale_in.threshold = f64::NAN;
        assert!(!validate(&c).is_empty(), "NaN thresholds are refused");
    }

    #[test]
    fn acting_master_needs_launch_spec_and_elb() {
        let mut c = Config::default();
        assert_eq!(paths(&c), ["ledger.table", "fleet.ami", "elb.name"]);
        c.fleet.ami = "ami-0123".into();
        c.elb.name = "site-elb".into();
        assert_eq!(paths(&c), ["ledger.table"]);
        c.ledger.table = "burst-agent".into();
        assert!(paths(&c).is_empty());
        c.fleet.launch_template = Some(LaunchTemplate {
            id: "lt-1".into(),
            name: "x".into(),
            version: String::new(),
        });
        assert_eq!(paths(&c), ["fleet.ami", "fleet.launch_template"]);
    }

    #[test]
    fn placeholder_scan() {
        assert_eq!(placeholders("{a}:{b}/x"), vec![Ok("a"), Ok("b")]);
        assert_eq!(placeholders("plain"), vec![]);
        assert_eq!(placeholders("{oops"), vec![Err(())]);
    }

    #[test]
    fn real_time_zones_with_and_without_dst() {
        for tz in ["Asia/Tokyo", "Europe/London", "America/New_York", "UTC"] {
            let mut c = Config::default();
            c.agent.dry_run = true;
            c.cap.time_zone = tz.into();
            assert!(validate(&c).is_empty(), "{tz}");
        }
    }

    #[test]
    fn a_state_dir_hooks_cannot_carry_is_refused_only_when_a_hook_uses_it() {
        let mut c = Config::default();
        c.agent.dry_run = true;
        c.agent.state_dir = "/var/lib/burst agent".into();
        // The default hooks put {state_dir} inside ssh's options, which rsync splits on spaces.
        assert_eq!(paths(&c), ["agent.state_dir"]);
        c.hooks.pre_register.argv = vec!["/usr/local/bin/site-sync".into(), "{private_ip}".into()];
        assert_eq!(paths(&c), Vec::<String>::new());
    }

    #[test]
    fn fallback_instance_types_must_be_types_and_new() {
        let mut c = Config::default();
        c.agent.dry_run = true;
        c.fleet.fallback_instance_types = vec!["m5.large".into(), "c5.xlarge".into()];
        assert_eq!(paths(&c), Vec::<String>::new());
        for bad in [
            vec!["M5 Large".to_string()],
            vec!["t3.small".into()],
            vec!["m5.large".into(), "m5.large".into()],
            vec![String::new()],
        ] {
            c.fleet.fallback_instance_types = bad.clone();
            assert_eq!(paths(&c), ["fleet.fallback_instance_types"], "{bad:?}");
        }
    }
}
