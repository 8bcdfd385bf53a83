//! The IAM policies the README gives, parsed and held to what the README says of them
//! (issue 19, part 8): every ```json block with a "Statement" is a policy; the master's and the
//! slaves' are found by the heading above them. What an emulator cannot show (moto does not
//! evaluate conditions), this shows from the text: each claim is a check, and
//! `each_check_catches_its_own_breakage` breaks the README's own policies one way per check and
//! sees the check fail.

use burst_agent::actuator::cloud::{
    TAG_BURST, TAG_DRAINING_SINCE, TAG_GROUP, TAG_INTENT, TAG_LAUNCHED_AT, TAG_OWNER,
    TAG_POOLED_SINCE,
};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Where the policies are written: these files, and every Markdown file in `DIRS` (the AWS
/// section may move to docs/aws.md).
const FILES: &[&str] = &["README.md"];
const DIRS: &[&str] = &["docs"];

/// Actions that take no resource ARN (IAM's reference lists no resource type for them), the
/// only ones allowed on "*".
const NO_RESOURCE_LEVEL: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:DescribeImages",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeKeyPairs",
    "elasticloadbalancing:DescribeLoadBalancers",
    "cloudwatch:GetMetricData",
    "cloudwatch:PutMetricData",
    "cloudwatch:DescribeAlarms",
];

/// What the agent on the master calls: the master's policy must allow each.
const MASTER_CALLS: &[&str] = &[
    "ec2:RunInstances",
    "ec2:CreateTags",
    "ec2:DeleteTags",
    "ec2:TerminateInstances",
    "ec2:StopInstances",
    "ec2:StartInstances",
    "ec2:DescribeInstances",
    "cloudwatch:GetMetricData",
    "cloudwatch:PutMetricData",
    "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
    "elasticloadbalancing:DescribeInstanceHealth",
    "iam:PassRole",
    // burst-agent preflight's lookups (its RunInstances DryRun needs what a launch needs).
    "ec2:DescribeImages",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "elasticloadbalancing:DescribeLoadBalancers",
];

/// RunInstances' resource types that must each be allowed, by ARN.
const LAUNCH_TYPES: &[&str] = &[
    "instance",
    "volume",
    "network-interface",
    "security-group",
    "subnet",
    "key-pair",
];
/// Resource types a RunInstances statement may name with a wildcard id (what it creates).
const CREATED: &[&str] = &["instance", "volume", "network-interface"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Master,
    Slave,
    /// `burst-agent fleet`'s: read the ledger table, every site, and write nothing.
    Desk,
    Other,
}

/// What `burst-agent fleet` calls (a parallel Scan), and the other reads a desk may be given:
/// none of them changes anything.
const DESK_READS: &[&str] = &[
    "dynamodb:scan",
    "dynamodb:query",
    "dynamodb:getitem",
    "dynamodb:batchgetitem",
    "dynamodb:describetable",
];

struct Policy {
    /// `FILE:LINE` of the block's first line.
    at: String,
    heading: String,
    kind: Kind,
    doc: Value,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = FILES.iter().map(|f| root().join(f)).collect();
    for d in DIRS {
        if let Ok(entries) = std::fs::read_dir(root().join(d)) {
            let mut md: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .collect();
            md.sort();
            files.extend(md);
        }
    }
    files
}

/// Every ```json block of `text` that holds a "Statement": (line of its first line, heading
/// above it, text).
fn json_blocks(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut block: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        match &mut block {
            Some((start, body)) => {
                if line.trim_start().starts_with("```") {
                    if body.contains("\"Statement\"") {
                        out.push((*start, heading.clone(), std::mem::take(body)));
                    }
                    block = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            None => {
                if line.trim_start().starts_with("```json") {
                    block = Some((n + 1, String::new()));
                } else if line.starts_with('#') {
                    heading = line.trim_start_matches('#').trim().to_string();
                }
            }
        }
    }
    out
}

/// The policies of every file; a block that does not parse fails the test, naming its line.
fn policies() -> Vec<Policy> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for path in markdown_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let name = path
            .strip_prefix(root())
            .unwrap_or(&path)
            .display()
            .to_string();
        for (start, heading, body) in json_blocks(&text) {
            match serde_json::from_str::<Value>(&body) {
                Ok(doc) => {
                    let h = heading.to_lowercase();
                    let kind = if h.contains("desk") {
                        Kind::Desk
                    } else if h.contains("master") {
                        Kind::Master
                    } else if h.contains("slave") {
                        Kind::Slave
                    } else {
                        Kind::Other
                    };
                    out.push(Policy {
                        at: format!("{name}:{start}"),
                        heading,
                        kind,
                        doc,
                    });
                }
                Err(e) => errors.push(format!(
                    "{name}:{}: the IAM policy starting at line {start} is not JSON: {e}",
                    start + e.line().saturating_sub(1)
                )),
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    out
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// One statement, its lists normalized.
struct Stmt<'a> {
    name: String,
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    raw: &'a Value,
}

impl Stmt<'_> {
    fn has(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a.eq_ignore_ascii_case(action))
    }
    /// The values under `Condition.OP.KEY` (keys compared without case, as IAM does).
    fn cond(&self, op: &str, key: &str) -> Vec<String> {
        let Some(ops) = self.raw.get("Condition").and_then(Value::as_object) else {
            return Vec::new();
        };
        let Some(keys) = ops.get(op).and_then(Value::as_object) else {
            return Vec::new();
        };
        keys.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| strings(Some(v)))
            .unwrap_or_default()
    }
    /// `Condition.OP.KEY` holds exactly one non-wildcard value, or a list of them.
    fn pinned(&self, op: &str, key: &str) -> bool {
        let v = self.cond(op, key);
        !v.is_empty() && v.iter().all(|x| !x.is_empty() && !x.contains(['*', '?']))
    }
}

fn statements(doc: &Value) -> Vec<Stmt<'_>> {
    let list: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, s)| Stmt {
            name: s
                .get("Sid")
                .and_then(Value::as_str)
                .map_or_else(|| format!("statement {}", i + 1), str::to_string),
            allow: s.get("Effect").and_then(Value::as_str) == Some("Allow"),
            actions: strings(s.get("Action")),
            resources: strings(s.get("Resource")),
            raw: s,
        })
        .collect()
}

/// `arn:aws:ec2:REGION:ACCOUNT:TYPE/ID` → (TYPE, ID).
fn ec2_resource(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:ec2:")?;
    let tail = rest.splitn(3, ':').nth(2)?;
    tail.split_once('/')
}

/// IAM's StringLike: `*` any run, `?` one character.
fn like(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

/// The tag keys a tagging statement lets through (`ForAllValues:StringEquals` or
/// `ForAllValues:StringLike` on `aws:TagKeys`), as patterns; `None` when unlimited.
fn tag_key_patterns(s: &Stmt) -> Option<Vec<String>> {
    let mut p = s.cond("ForAllValues:StringEquals", "aws:TagKeys");
    p.extend(s.cond("ForAllValues:StringLike", "aws:TagKeys"));
    (!p.is_empty()).then_some(p)
}

fn launch_tag_keys() -> Vec<&'static str> {
    vec![
        TAG_GROUP,
        TAG_OWNER,
        TAG_INTENT,
        TAG_LAUNCHED_AT,
        TAG_BURST,
        "Name",
    ]
}

/// Every claim the README makes of a policy, as the violations found (empty: it holds).
fn check(doc: &Value, kind: Kind) -> Vec<String> {
    let mut bad = Vec::new();
    let stmts = statements(doc);
    if stmts.is_empty() {
        bad.push("no statements".to_string());
    }
    let group_tag = format!("aws:ResourceTag/{TAG_GROUP}");
    let owner_tag = format!("aws:ResourceTag/{TAG_OWNER}");
    let req_group = format!("aws:RequestTag/{TAG_GROUP}");
    let req_owner = format!("aws:RequestTag/{TAG_OWNER}");
    for s in stmts.iter().filter(|s| s.allow) {
        let n = &s.name;
        if s.raw.get("NotAction").is_some() || s.raw.get("NotResource").is_some() {
            bad.push(format!("{n}: an Allow with NotAction or NotResource"));
        }
        for a in &s.actions {
            if a.contains('*') {
                bad.push(format!("{n}: allows the wildcard action {a:?}"));
            }
        }
        if s.resources.is_empty() {
            bad.push(format!("{n}: no Resource"));
        }
        if s.resources.iter().any(|r| r == "*") {
            for a in &s.actions {
                if !NO_RESOURCE_LEVEL.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                    bad.push(format!(
                        "{n}: {a} on Resource \"*\" (it takes resource ARNs: name them)"
                    ));
                }
            }
        }

        if s.has("ec2:RunInstances") {
            let types: Vec<(&str, &str)> = s
                .resources
                .iter()
                .map(|r| ec2_resource(r).unwrap_or(("?", r)))
                .collect();
            for (t, id) in &types {
                if *t == "?" {
                    bad.push(format!(
                        "{n}: RunInstances on {id:?}, not an EC2 resource ARN"
                    ));
                } else if !CREATED.contains(t) && id.contains(['*', '?']) {
                    bad.push(format!(
                        "{n}: RunInstances on any {t} (a wildcard): name each {t} by its ARN"
                    ));
                }
            }
            for created in ["instance", "volume"] {
                if !types.iter().any(|(t, _)| *t == created) {
                    continue;
                }
                if types.iter().any(|(t, _)| *t != created) {
                    bad.push(format!(
                        "{n}: RunInstances on {created} shares a statement with other resource \
                         types (its conditions do not apply to them)"
                    ));
                }
                if created == "instance" && !s.pinned("StringEquals", "ec2:InstanceType") {
                    bad.push(format!(
                        "{n}: RunInstances on instances without an ec2:InstanceType condition"
                    ));
                }
                for key in [&req_group, &req_owner] {
                    if !s.pinned("StringEquals", key) {
                        bad.push(format!(
                            "{n}: RunInstances on {created} without the {key} condition"
                        ));
                    }
                }
                match tag_key_patterns(s) {
                    None => bad.push(format!(
                        "{n}: RunInstances on {created} without a ForAllValues aws:TagKeys \
                         condition"
                    )),
                    Some(p) => {
                        for k in launch_tag_keys() {
                            if !p.iter().any(|x| like(x, k)) {
                                bad.push(format!(
                                    "{n}: aws:TagKeys lacks {k}, a tag the agent writes at launch"
                                ));
                            }
                        }
                        if p.iter().any(|x| x.contains('*')) {
                            bad.push(format!("{n}: aws:TagKeys has a wildcard"));
                        }
                    }
                }
            }
        }

        for tagging in ["ec2:CreateTags", "ec2:DeleteTags"] {
            if !s.has(tagging) {
                continue;
            }
            for r in &s.resources {
                if !matches!(ec2_resource(r), Some(("instance" | "volume", _))) {
                    bad.push(format!(
                        "{n}: {tagging} on {r:?}: only instances and volumes"
                    ));
                }
            }
            let at_launch = s.cond("StringEquals", "ec2:CreateAction") == ["RunInstances"];
            let on_ours = s.pinned("StringEquals", &group_tag);
            if tagging == "ec2:DeleteTags" || !at_launch {
                if !on_ours {
                    bad.push(format!(
                        "{n}: {tagging} neither only at launch (ec2:CreateAction) nor only on \
                         instances tagged {group_tag}"
                    ));
                    continue;
                }
                // Owned by this install: its owner tag, or none yet (then only the owner tag
                // may be added).
                let legacy = s.cond("Null", &owner_tag) == ["true"]
                    && tag_key_patterns(s).is_some_and(|p| p == [TAG_OWNER]);
                if !s.pinned("StringEquals", &owner_tag) && !legacy {
                    bad.push(format!(
                        "{n}: {tagging} on instances whose {owner_tag} is not this install's"
                    ));
                }
                // Only the agent's keys, and never another install's group or owner.
                let keys = tag_key_patterns(s);
                match &keys {
                    None => bad.push(format!(
                        "{n}: {tagging} of any tag key (no ForAllValues aws:TagKeys)"
                    )),
                    Some(p) => {
                        if !p.iter().all(|x| x.starts_with("burst-agent:")) {
                            bad.push(format!("{n}: {tagging} of keys not the agent's: {p:?}"));
                        }
                    }
                }
                // What a CreateTags may write (DeleteTags writes no value).
                let writes = if tagging == "ec2:CreateTags" {
                    &[(TAG_GROUP, &req_group), (TAG_OWNER, &req_owner)][..]
                } else {
                    &[]
                };
                for (tag, req) in writes {
                    let may_write = keys.as_ref().is_none_or(|p| p.iter().any(|x| like(x, tag)));
                    let pinned =
                        s.pinned("StringEquals", req) || s.pinned("StringEqualsIfExists", req);
                    if may_write && !pinned {
                        bad.push(format!(
                            "{n}: {tagging} may set {tag} to anything (no {req} condition)"
                        ));
                    }
                }
            }
        }

        for a in [
            "ec2:TerminateInstances",
            "ec2:StopInstances",
            "ec2:StartInstances",
        ] {
            if !s.has(a) {
                continue;
            }
            for key in [&group_tag, &owner_tag] {
                if !s.pinned("StringEquals", key) {
                    bad.push(format!("{n}: {a} without the {key} condition"));
                }
            }
            for r in &s.resources {
                if !matches!(ec2_resource(r), Some(("instance", _))) {
                    bad.push(format!("{n}: {a} on {r:?}: only instances"));
                }
            }
        }

        // Every ELB call that takes a resource is limited to this ELB's ARN; a lookup that
        // takes none (DescribeLoadBalancers, preflight's) goes on "*".
        if s.actions.iter().any(|a| {
            a.to_lowercase().starts_with("elasticloadbalancing:")
                && !NO_RESOURCE_LEVEL.contains(&a.as_str())
        }) {
            for r in &s.resources {
                let name = r
                    .strip_prefix("arn:aws:elasticloadbalancing:")
                    .and_then(|t| t.splitn(3, ':').nth(2))
                    .and_then(|t| t.strip_prefix("loadbalancer/"));
                if name.is_none_or(|x| x.is_empty() || x.contains(['*', '?', '/'])) {
                    bad.push(format!(
                        "{n}: ELB calls on {r:?}, not one classic load balancer's ARN"
                    ));
                }
            }
        }

        if s.has("cloudwatch:PutMetricData") {
            let ns = s.cond("StringEquals", "cloudwatch:namespace");
            if !s.pinned("StringEquals", "cloudwatch:namespace") {
                bad.push(format!(
                    "{n}: PutMetricData into any namespace (no cloudwatch:namespace condition)"
                ));
            } else if ns.iter().any(|x| x.starts_with("AWS/")) {
                bad.push(format!("{n}: PutMetricData into an AWS/ namespace"));
            }
        }

        if s.has("iam:PassRole") {
            for r in &s.resources {
                let ok = r
                    .strip_prefix("arn:aws:iam::")
                    .and_then(|t| t.split_once(":role/"))
                    .is_some_and(|(_, role)| !role.is_empty() && !role.contains(['*', '?']));
                if !ok {
                    bad.push(format!("{n}: iam:PassRole on {r:?}, not one role's ARN"));
                }
            }
            if s.cond("StringEquals", "iam:PassedToService") != ["ec2.amazonaws.com"] {
                bad.push(format!("{n}: iam:PassRole to any service"));
            }
        }
    }

    let allowed = |action: &str| {
        stmts
            .iter()
            .filter(|s| s.allow && s.has(action))
            .collect::<Vec<_>>()
    };
    match kind {
        Kind::Master => {
            for a in MASTER_CALLS {
                if allowed(a).is_empty() {
                    bad.push(format!("{a} is not allowed: the agent calls it"));
                }
            }
            let launch: Vec<String> = allowed("ec2:RunInstances")
                .iter()
                .flat_map(|s| s.resources.clone())
                .collect();
            let covers = |t: &str| {
                launch
                    .iter()
                    .any(|r| ec2_resource(r).is_some_and(|(x, _)| x == t))
            };
            for t in LAUNCH_TYPES {
                if !covers(t) {
                    bad.push(format!("RunInstances names no {t} ARN"));
                }
            }
            if !covers("image") && !covers("launch-template") {
                bad.push("RunInstances names no image or launch-template ARN".into());
            }
            // Both of the site's namespaces: the hosts' samples and the agent's own.
            let ns = put_namespaces(&allowed("cloudwatch:PutMetricData"));
            for want in ["NAMESPACE", "NAMESPACE/Agent"] {
                if !ns.iter().any(|x| x == want) {
                    bad.push(format!(
                        "PutMetricData into {want} is not allowed: the agent writes there"
                    ));
                }
            }
            // The warm pool's and the drain's own tags, after launch.
            for tag in [TAG_DRAINING_SINCE, TAG_POOLED_SINCE] {
                for a in ["ec2:CreateTags", "ec2:DeleteTags"] {
                    let ok = allowed(a).iter().any(|s| {
                        s.pinned("StringEquals", &group_tag)
                            && tag_key_patterns(s).is_none_or(|p| p.iter().any(|x| like(x, tag)))
                    });
                    if !ok {
                        bad.push(format!("{a} of {tag} on the agent's slaves is not allowed"));
                    }
                }
            }
        }
        Kind::Slave => {
            for s in &stmts {
                if !s.allow {
                    continue;
                }
                if s.actions.len() != 1 || !s.has("cloudwatch:PutMetricData") {
                    bad.push(format!(
                        "{}: the slaves' policy allows {:?}; only cloudwatch:PutMetricData",
                        s.name, s.actions
                    ));
                }
            }
            if allowed("cloudwatch:PutMetricData").is_empty() {
                bad.push("the slaves' policy does not allow PutMetricData".into());
            }
            // The agent's own namespace is the master's alone: a slave writing there could
            // send the dead master's heartbeat or the burst cap's count.
            for x in put_namespaces(&allowed("cloudwatch:PutMetricData")) {
                if x != "NAMESPACE" {
                    bad.push(format!(
                        "the slaves may write {x:?}: only the site's namespace, NAMESPACE"
                    ));
                }
            }
        }
        Kind::Desk => {
            // Read-only (issue 29): a support desk sees every site and can change nothing.
            for st in stmts.iter().filter(|st| st.allow) {
                for a in &st.actions {
                    if !DESK_READS.contains(&a.to_lowercase().as_str()) {
                        bad.push(format!(
                            "{}: the desk's policy allows {a}: only {DESK_READS:?} (no write, no \
                             wildcard, nothing outside the ledger table)",
                            st.name
                        ));
                    }
                }
                for r in &st.resources {
                    if r != "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE" {
                        bad.push(format!(
                            "{}: the desk's policy reaches {r}: only the ledger table's ARN",
                            st.name
                        ));
                    }
                }
            }
            if !stmts.iter().any(|st| st.allow && st.has("dynamodb:Scan")) {
                bad.push("the desk's policy does not allow the Scan `fleet` reads with".into());
            }
            return bad;
        }
        Kind::Other => {}
    }
    // The ledger table (issue 28): every item action only on this site's partition key, and
    // nothing table-wide (moto does not enforce LeadingKeys: this is the check).
    for st in stmts.iter().filter(|st| st.allow) {
        for a in st
            .actions
            .iter()
            .filter(|a| a.to_lowercase().starts_with("dynamodb:"))
        {
            let a = a.to_lowercase();
            if [
                "dynamodb:scan",
                "dynamodb:deletetable",
                "dynamodb:createtable",
                "dynamodb:updatetable",
            ]
            .contains(&a.as_str())
            {
                bad.push(format!(
                    "{}: {a} reaches every site's items or the table itself",
                    st.name
                ));
            }
            if a != "dynamodb:describetable"
                && st.cond("ForAllValues:StringEquals", "dynamodb:LeadingKeys") != ["GROUP"]
            {
                bad.push(format!(
                    "{}: {a} without ForAllValues:StringEquals dynamodb:LeadingKeys [\"GROUP\"]: \
                     one site could spend another's guarantee",
                    st.name
                ));
            }
        }
    }
    bad
}

#[test]
fn the_ledger_tables_policy_keeps_each_master_to_its_own_sites_items() {
    let all = policies();
    let mut p = all
        .into_iter()
        .find(|p| p.doc.to_string().contains("dynamodb:LeadingKeys"))
        .expect("a policy for the ledger table in docs/aws.md");
    assert!(
        check(&p.doc, p.kind).is_empty(),
        "{:?}",
        check(&p.doc, p.kind)
    );
    // Each way to break it is caught.
    let good = p.doc.clone();
    p.doc["Statement"][0]
        .as_object_mut()
        .unwrap()
        .remove("Condition");
    assert!(
        check(&p.doc, p.kind)
            .iter()
            .any(|b| b.contains("LeadingKeys")),
        "a policy without the LeadingKeys condition passed"
    );
    p.doc = good.clone();
    p.doc["Statement"][0]["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"] =
        serde_json::json!(["GROUP", "other-site"]);
    assert!(
        !check(&p.doc, p.kind).is_empty(),
        "a second site's key passed"
    );
    p.doc = good;
    p.doc["Statement"][1]["Action"] =
        serde_json::json!(["dynamodb:DescribeTable", "dynamodb:Scan"]);
    assert!(
        check(&p.doc, p.kind)
            .iter()
            .any(|b| b.contains("dynamodb:scan")),
        "a Scan passed"
    );
}

#[test]
fn the_desks_policy_reads_every_sites_items_and_writes_nothing() {
    let mut p = the(Kind::Desk);
    assert!(
        check(&p.doc, p.kind).is_empty(),
        "{}: {:?}",
        p.at,
        check(&p.doc, p.kind)
    );
    let good = p.doc.clone();
    for (action, resource) in [
        (
            "dynamodb:PutItem",
            "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE",
        ),
        ("dynamodb:*", "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE"),
        (
            "dynamodb:UpdateItem",
            "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE",
        ),
        ("ec2:TerminateInstances", "*"),
        ("dynamodb:Scan", "arn:aws:dynamodb:REGION:ACCOUNT:table/*"),
        (
            "dynamodb:Scan",
            "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE*",
        ),
        ("dynamodb:Scan", "arn:aws:dynamodb:*:*:table/TABLE"),
        (
            "dynamodb:Query",
            "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/index/*",
        ),
    ] {
        p.doc = good.clone();
        p.doc["Statement"].as_array_mut().unwrap().push(
            json!({ "Sid": "Broken", "Effect": "Allow", "Action": action, "Resource": resource }),
        );
        assert!(
            !check(&p.doc, p.kind).is_empty(),
            "the desk's policy with {action} on {resource} passed"
        );
    }
    // And without the Scan it cannot read.
    p.doc = json!({ "Version": "2012-10-17", "Statement": [
        { "Sid": "Q", "Effect": "Allow", "Action": "dynamodb:Query",
          "Resource": "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE" } ] });
    assert!(
        !check(&p.doc, p.kind).is_empty(),
        "a desk policy without Scan passed"
    );
}

/// Every namespace the statements let PutMetricData write (their `cloudwatch:namespace`).
fn put_namespaces(stmts: &[&Stmt<'_>]) -> Vec<String> {
    stmts
        .iter()
        .flat_map(|s| s.cond("StringEquals", "cloudwatch:namespace"))
        .collect()
}

fn the(kind: Kind) -> Policy {
    let mut found: Vec<Policy> = policies().into_iter().filter(|p| p.kind == kind).collect();
    assert!(
        !found.is_empty(),
        "no {kind:?} IAM policy (a ```json block with \"Statement\" under a heading naming the \
         {kind:?}) in {FILES:?} or {DIRS:?}/*.md"
    );
    found.remove(0)
}

#[test]
fn every_policy_in_the_docs_holds_what_the_docs_say() {
    let all = policies();
    assert!(
        !all.is_empty(),
        "no IAM policy (a ```json block with \"Statement\") in {FILES:?} or {DIRS:?}/*.md"
    );
    for kind in [Kind::Master, Kind::Slave] {
        assert!(
            all.iter().any(|p| p.kind == kind),
            "no {kind:?} policy among the headings {:?}",
            all.iter().map(|p| &p.heading).collect::<Vec<_>>()
        );
    }
    let mut bad = Vec::new();
    for p in &all {
        for v in check(&p.doc, p.kind) {
            bad.push(format!("{} ({}): {v}", p.at, p.heading));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

/// The statement of `doc` that allows `action` on a resource containing `resource`.
fn stmt<'a>(doc: &'a mut Value, action: &str, resource: &str) -> &'a mut Value {
    let list = doc["Statement"].as_array_mut().expect("a Statement list");
    list.iter_mut()
        .find(|s| {
            strings(s.get("Action")).iter().any(|a| a == action)
                && strings(s.get("Resource"))
                    .iter()
                    .any(|r| r.contains(resource))
        })
        .unwrap_or_else(|| panic!("no statement allows {action} on {resource}"))
}

fn drop_cond(s: &mut Value, op: &str, key: &str) {
    let shown = s.to_string();
    s["Condition"][op]
        .as_object_mut()
        .unwrap_or_else(|| panic!("no {op} in {shown}"))
        .remove(key)
        .unwrap_or_else(|| panic!("no {op}.{key} in {shown}"));
}

/// Each check fails when the README's own policy is broken its way: a check that cannot fail
/// shows nothing.
#[test]
fn each_check_catches_its_own_breakage() {
    type Sabotage = (&'static str, fn(&mut Value));
    let master: &[Sabotage] = &[
        ("ec2:InstanceType", |d| {
            drop_cond(
                stmt(d, "ec2:RunInstances", ":instance/"),
                "StringEquals",
                "ec2:InstanceType",
            )
        }),
        ("aws:RequestTag/burst-agent:group", |d| {
            drop_cond(
                stmt(d, "ec2:RunInstances", ":instance/"),
                "StringEquals",
                "aws:RequestTag/burst-agent:group",
            )
        }),
        ("aws:RequestTag/burst-agent:owner", |d| {
            drop_cond(
                stmt(d, "ec2:RunInstances", ":volume/"),
                "StringEquals",
                "aws:RequestTag/burst-agent:owner",
            )
        }),
        ("ForAllValues aws:TagKeys", |d| {
            drop_cond(
                stmt(d, "ec2:RunInstances", ":instance/"),
                "ForAllValues:StringEquals",
                "aws:TagKeys",
            )
        }),
        ("lacks burst-agent:intent", |d| {
            stmt(d, "ec2:RunInstances", ":instance/")["Condition"]["ForAllValues:StringEquals"]
                ["aws:TagKeys"] = json!(["burst-agent:group", "burst-agent:owner"]);
        }),
        ("shares a statement", |d| {
            let s = stmt(d, "ec2:RunInstances", ":instance/");
            s["Resource"] = json!([s["Resource"], "arn:aws:ec2:REGION::image/AMI"]);
        }),
        ("any subnet", |d| {
            stmt(d, "ec2:RunInstances", ":subnet/")["Resource"] =
                json!("arn:aws:ec2:REGION:ACCOUNT:subnet/*");
        }),
        ("RunInstances names no subnet", |d| {
            let s = stmt(d, "ec2:RunInstances", ":subnet/");
            s["Action"] = json!("ec2:DescribeSubnets");
        }),
        ("no image or launch-template", |d| {
            stmt(d, "ec2:RunInstances", "::image/")["Action"] = json!("ec2:DescribeImages");
        }),
        ("ec2:RunInstances on Resource \"*\"", |d| {
            stmt(d, "ec2:RunInstances", "::image/")["Resource"] = json!("*");
        }),
        ("neither only at launch", |d| {
            stmt(d, "ec2:CreateTags", ":volume/")
                .as_object_mut()
                .unwrap()
                .remove("Condition");
        }),
        ("of any tag key", |d| {
            let s = stmt(d, "ec2:DeleteTags", ":instance/");
            drop_cond(s, "ForAllValues:StringLike", "aws:TagKeys");
        }),
        ("may set burst-agent:owner to anything", |d| {
            let s = stmt(d, "ec2:DeleteTags", ":instance/");
            drop_cond(
                s,
                "StringEqualsIfExists",
                "aws:RequestTag/burst-agent:owner",
            );
        }),
        ("not this install's", |d| {
            let s = stmt(d, "ec2:DeleteTags", ":instance/");
            drop_cond(s, "StringEquals", "aws:ResourceTag/burst-agent:owner");
        }),
        (
            "TerminateInstances without the aws:ResourceTag/burst-agent:owner",
            |d| {
                let s = stmt(d, "ec2:TerminateInstances", ":instance/");
                drop_cond(s, "StringEquals", "aws:ResourceTag/burst-agent:owner");
            },
        ),
        ("ELB calls on \"*\"", |d| {
            stmt(
                d,
                "elasticloadbalancing:DescribeInstanceHealth",
                "loadbalancer/",
            )["Resource"] = json!("*");
        }),
        ("ELB calls on", |d| {
            stmt(
                d,
                "elasticloadbalancing:DescribeInstanceHealth",
                "loadbalancer/",
            )["Resource"] = json!("arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/*");
        }),
        ("wildcard action \"ec2:*\"", |d| {
            stmt(d, "ec2:DescribeInstances", "*")["Action"] =
                json!(["ec2:*", "cloudwatch:GetMetricData"]);
        }),
        ("wildcard action \"*\"", |d| {
            stmt(d, "ec2:DescribeInstances", "*")["Action"] = json!("*");
        }),
        ("PutMetricData into any namespace", |d| {
            stmt(d, "cloudwatch:PutMetricData", "*")
                .as_object_mut()
                .unwrap()
                .remove("Condition");
        }),
        ("iam:PassRole on", |d| {
            stmt(d, "iam:PassRole", ":role/")["Resource"] = json!("*");
        }),
        ("PutMetricData into NAMESPACE/Agent is not allowed", |d| {
            stmt(d, "cloudwatch:PutMetricData", "*")["Condition"]["StringEquals"]
                ["cloudwatch:namespace"] = json!("NAMESPACE");
        }),
        ("ec2:StopInstances is not allowed", |d| {
            stmt(d, "ec2:StopInstances", ":instance/")["Action"] =
                json!(["ec2:TerminateInstances", "ec2:StartInstances"]);
        }),
    ];
    let slave: &[Sabotage] = &[
        ("only cloudwatch:PutMetricData", |d| {
            stmt(d, "cloudwatch:PutMetricData", "*")["Action"] =
                json!(["cloudwatch:PutMetricData", "ec2:DescribeInstances"]);
        }),
        ("PutMetricData into any namespace", |d| {
            stmt(d, "cloudwatch:PutMetricData", "*")
                .as_object_mut()
                .unwrap()
                .remove("Condition");
        }),
        ("PutMetricData into an AWS/ namespace", |d| {
            stmt(d, "cloudwatch:PutMetricData", "*")["Condition"]["StringEquals"]
                ["cloudwatch:namespace"] = json!("AWS/ELB");
        }),
        ("the slaves may write \"NAMESPACE/Agent\"", |d| {
            stmt(d, "cloudwatch:PutMetricData", "*")["Condition"]["StringEquals"]
                ["cloudwatch:namespace"] = json!(["NAMESPACE", "NAMESPACE/Agent"]);
        }),
    ];
    for (kind, sabotages) in [(Kind::Master, master), (Kind::Slave, slave)] {
        let p = the(kind);
        assert!(
            check(&p.doc, kind).is_empty(),
            "{}: {:?}",
            p.at,
            check(&p.doc, kind)
        );
        for (want, break_it) in sabotages {
            let mut doc = p.doc.clone();
            break_it(&mut doc);
            let found = check(&doc, kind);
            assert!(
                found.iter().any(|v| v.contains(want)),
                "{kind:?} policy broken for {want:?}: the checks said {found:?}"
            );
        }
    }
}

#[test]
fn a_block_that_is_not_json_is_named_by_its_line() {
    let md = "# t\n\n## IAM for the master\n\n```json\n{ \"Statement\": [ }\n```\n";
    let blocks = json_blocks(md);
    assert_eq!(blocks.len(), 1);
    let (start, heading, body) = &blocks[0];
    assert_eq!((*start, heading.as_str()), (6, "IAM for the master"));
    assert!(serde_json::from_str::<Value>(body).is_err());
}

#[test]
fn string_like_matches_as_iam_does() {
    assert!(like("burst-agent:*", "burst-agent:pooled-since"));
    assert!(!like("burst-agent:*", "Name"));
    assert!(like("a?c", "abc") && !like("a?c", "ac"));
    assert!(like("*", ""));
}
