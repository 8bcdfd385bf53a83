//! What the desk reads of every site (`burst-agent fleet`) and the records the holder writes for
//! it, beside the guarantee's items:
//!
//! | item | attributes | written by |
//! | --- | --- | --- |
//! | `status` | `holder`, `at`, `action`, `text`, `reasons`, `holds`, `in_service`, `coming`, `draining`, `warm`, `used`, `limit`, `day`, `time_zone` | the holder, when it changes and every 5 minutes |
//! | `standby#HOLDER` | `stands_by_for`, `seen_at` | an agent standing by, every 5 minutes (kept a day) |
//! | `run#i-…#START` | `instance`, `instance_type`, `started_at`, `seen_at` (every 5 minutes), `ended_at` | the holder, when a slave starts, goes on and stops running |
//! | `short#DAY#KIND#FROM#WRITER` | `held_secs`, `max_short` | the holder, while a hold leaves the site short: one item per write, summed when read |
//!
//! Every one of them only describes: no agent reads them back to decide anything, and one that
//! does not read is named in `SiteRecords::problems` and left out, never an error of the read
//! (an agent adopting its site reads every item of it).
//!
//! Their keys sort after `lease`, so the guarantee's `read_site` never reads them; only the
//! holder's writer reads its own runs back (`read_runs`), to carry them on. [`Table::read_all`]
//! reads every site in one parallel Scan, filtered to what the view needs ([`Wanted`]).

use super::*;
use burst_core::usage::{Held, Run, Shortfall, SiteStatus};
use jiff::Timestamp;

/// How long a standby's mark outlives its last write.
const STANDBY_KEEP_SECS: i64 = 86_400;

impl Table {
    /// Writes the site's status (unconditional: only the holder writes it, and it names itself).
    pub async fn put_status(&self, st: &SiteStatus) -> Result<(), AwsError> {
        let mut item = self.key("status");
        for (k, v) in [
            ("holder", &st.holder),
            ("at", &st.at.to_string()),
            ("action", &st.action),
            ("text", &st.text),
            ("day", &st.day),
            ("time_zone", &st.time_zone),
        ] {
            item.insert(k.into(), s(v));
        }
        item.insert(
            "reasons".into(),
            AttributeValue::L(st.reasons.iter().map(s).collect()),
        );
        item.insert(
            "holds".into(),
            AttributeValue::L(st.holds.iter().map(|h| s(h.name())).collect()),
        );
        for (k, v) in [
            ("in_service", st.in_service),
            ("coming", st.coming),
            ("draining", st.draining),
            ("warm", st.warm),
            ("used", st.used),
            ("limit", st.limit),
        ] {
            item.insert(k.into(), n(v));
        }
        item.insert(EXPIRES_AT.into(), n(expires_for(&st.day)));
        self.put("PutItem", item).await
    }

    /// Marks `holder` as standing by for `for_holder` at `at` (kept a day).
    pub async fn put_standby(
        &self,
        holder: &str,
        for_holder: &str,
        at: Timestamp,
    ) -> Result<(), AwsError> {
        let mut item = self.key(&format!("standby#{holder}"));
        item.insert("stands_by_for".into(), s(for_holder));
        item.insert("seen_at".into(), s(at.to_string()));
        item.insert(EXPIRES_AT.into(), n(at.as_second() + STANDBY_KEEP_SECS));
        self.put("PutItem", item).await
    }

    /// The site's runs (for the holder that carries them on), strongly consistent.
    pub async fn read_runs(&self, now_epoch: i64) -> Result<SiteRecords, AwsError> {
        self.query(now_epoch, "begins_with(#i, :k)", s("run#"))
            .await
    }

    /// Records that a run began (idempotent: the item is keyed by instance and start).
    pub async fn open_run(&self, r: &Run, day: &str) -> Result<(), AwsError> {
        let mut item = self.run_item(r);
        item.insert(EXPIRES_AT.into(), n(expires_for(day)));
        // Written already: a retry after a lost answer.
        self.put_new_item(item).await
    }

    /// Records that the open run `r` was still running at `at` (nothing if it ended or was
    /// never written).
    pub async fn touch_run(&self, r: &Run, at: Timestamp) -> Result<(), AwsError> {
        let req = self
            .aws
            .dynamodb
            .update_item()
            .table_name(&self.name)
            .set_key(Some(self.key(&run_key(&r.instance, r.start))))
            .update_expression("SET seen_at = :at")
            .condition_expression("attribute_exists(started_at) AND attribute_not_exists(ended_at)")
            .expression_attribute_values(":at", s(at.to_string()));
        self.conditional("UpdateItem", req.send()).await.map(drop)
    }

    /// Records that run `r` ended at `end` (on local day `end_day`, which its expiry follows):
    /// the whole item, so a run whose start was never written is complete too. A run ended
    /// already keeps its first end.
    pub async fn close_run(&self, r: &Run, end: Timestamp, end_day: &str) -> Result<(), AwsError> {
        let mut item = self.run_item(r);
        item.insert("ended_at".into(), s(end.to_string()));
        item.insert(EXPIRES_AT.into(), n(expires_for(end_day)));
        let req = self
            .aws
            .dynamodb
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(ended_at)");
        self.conditional("PutItem", req.send()).await.map(drop)
    }

    /// Writes one shortfall as its own item (keyed by its day, kind, start and `writer`): a
    /// retry after a lost answer finds it there and adds nothing.
    pub async fn put_shortfall(&self, sh: &Shortfall, writer: &str) -> Result<(), AwsError> {
        let mut item = self.key(&format!(
            "short#{}#{}#{}#{writer}",
            sh.day,
            sh.held.name(),
            sh.from.as_second()
        ));
        item.insert("held_secs".into(), n(sh.secs));
        item.insert("max_short".into(), n(sh.max_short));
        item.insert(EXPIRES_AT.into(), n(expires_for(&sh.day)));
        self.put_new_item(item).await
    }

    /// A run's item without its end and expiry: its instance, type, start and last sighting.
    fn run_item(&self, r: &Run) -> HashMap<String, AttributeValue> {
        let mut item = self.key(&run_key(&r.instance, r.start));
        item.insert("instance".into(), s(&r.instance));
        item.insert("instance_type".into(), s(&r.instance_type));
        item.insert("started_at".into(), s(r.start.to_string()));
        if let Some(at) = r.seen_at {
            item.insert("seen_at".into(), s(at.to_string()));
        }
        item
    }

    /// Puts `item` unless the site has it already (then it is this write's earlier try).
    async fn put_new_item(&self, item: HashMap<String, AttributeValue>) -> Result<(), AwsError> {
        let req = self
            .aws
            .dynamodb
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#i)")
            .expression_attribute_names("#i", ITEM);
        self.conditional("PutItem", req.send()).await.map(drop)
    }

    async fn put(
        &self,
        op: &'static str,
        item: HashMap<String, AttributeValue>,
    ) -> Result<(), AwsError> {
        self.aws
            .call(
                op,
                self.aws
                    .dynamodb
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(item))
                    .send(),
            )
            .await
            .map(drop)
    }

    /// Every site of table `name`, the items `wanted`, read in `segments` parallel scans
    /// (eventually consistent: a person's view). An item that does not read is left out and
    /// named in its site's `problems`; the site and its other items still show.
    pub async fn read_all(
        aws: &Aws,
        name: &str,
        segments: i32,
        wanted: &Wanted,
        now_epoch: i64,
    ) -> Result<BTreeMap<String, SiteRecords>, AwsError> {
        let mut tasks = tokio::task::JoinSet::new();
        for segment in 0..segments {
            let (aws, name) = (aws.clone(), name.to_string());
            let (filter, values) = wanted.filter();
            tasks.spawn(async move {
                let mut items = Vec::new();
                let mut pages = aws
                    .dynamodb
                    .scan()
                    .table_name(&name)
                    .segment(segment)
                    .total_segments(segments)
                    .filter_expression(filter)
                    .expression_attribute_names("#i", ITEM)
                    .set_expression_attribute_values(Some(values))
                    .into_paginator()
                    .send();
                while let Some(page) = aws.page("Scan", pages.next()).await? {
                    items.extend(page.items().iter().cloned());
                }
                Ok::<_, AwsError>(items)
            });
        }
        let mut by_site: BTreeMap<String, SiteRecords> = BTreeMap::new();
        while let Some(done) = tasks.join_next().await {
            let items = done.map_err(|e| build_error("Scan", e))??;
            for i in items {
                let Some(site) = get_s(&i, SITE) else {
                    continue;
                };
                let table = Table::new(aws.clone(), name, &site);
                let recs = by_site.entry(site).or_default();
                if let Err(e) = table.take_item(&i, now_epoch, recs) {
                    recs.problems.push(format!("{} (left out)", e.message));
                }
            }
        }
        for recs in by_site.values_mut() {
            recs.problems.sort();
            recs.runs
                .sort_by(|a, b| (a.start, &a.instance).cmp(&(b.start, &b.instance)));
        }
        Ok(by_site)
    }

    /// Reads one of the desk's items into `out`; `Ok(false)`: not one of them.
    pub(super) fn take_usage_item(
        &self,
        key: &str,
        i: &HashMap<String, AttributeValue>,
        out: &mut SiteRecords,
    ) -> Result<bool, AwsError> {
        let site = &self.site;
        let time = |k: &str| -> Result<Option<Timestamp>, AwsError> {
            get_s(i, k)
                .map(|v| {
                    v.parse::<Timestamp>()
                        .map_err(|_| bad(site, key, &format!("{k} {v:?} is not a time")))
                })
                .transpose()
        };
        let num = |k: &str| -> Result<u32, AwsError> {
            match get_n(i, k) {
                None => Ok(0),
                Some(v) => u32::try_from(v)
                    .map_err(|_| bad(site, key, &format!("{k} {v} is out of range"))),
            }
        };
        if key == "status" {
            out.status = Some(SiteStatus {
                holder: get_s(i, "holder").unwrap_or_default(),
                at: time("at")?.ok_or_else(|| bad(site, key, "no at"))?,
                action: get_s(i, "action").unwrap_or_default(),
                text: get_s(i, "text").unwrap_or_default(),
                reasons: i
                    .get("reasons")
                    .and_then(|v| v.as_l().ok())
                    .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                    .unwrap_or_default(),
                holds: i
                    .get("holds")
                    .and_then(|v| v.as_l().ok())
                    .map(|l| {
                        l.iter()
                            .filter_map(|v| v.as_s().ok().and_then(|h| Held::parse(h)))
                            .collect()
                    })
                    .unwrap_or_default(),
                in_service: num("in_service")?,
                coming: num("coming")?,
                draining: num("draining")?,
                warm: num("warm")?,
                used: num("used")?,
                limit: num("limit")?,
                day: get_s(i, "day").unwrap_or_default(),
                time_zone: get_s(i, "time_zone").unwrap_or_default(),
            });
        } else if let Some(holder) = key.strip_prefix("standby#") {
            out.standbys.push(Standby {
                holder: holder.to_string(),
                stands_by_for: get_s(i, "stands_by_for").unwrap_or_default(),
                seen_at: time("seen_at")?.ok_or_else(|| bad(site, key, "no seen_at"))?,
            });
        } else if key.starts_with("run#") {
            out.runs.push(Run {
                instance: get_s(i, "instance").ok_or_else(|| bad(site, key, "no instance"))?,
                instance_type: get_s(i, "instance_type").unwrap_or_default(),
                start: time("started_at")?.ok_or_else(|| bad(site, key, "no started_at"))?,
                end: time("ended_at")?,
                seen_at: time("seen_at")?,
            });
        } else if let Some(rest) = key.strip_prefix("short#") {
            // DAY#KIND#FROM#WRITER
            let mut parts = rest.splitn(4, '#');
            let (day, kind, from) = (parts.next(), parts.next(), parts.next());
            let (Some(day), Some(kind), Some(from)) = (day, kind, from) else {
                return Err(bad(site, key, "not short#DAY#KIND#FROM#WRITER"));
            };
            let held = Held::parse(kind)
                .ok_or_else(|| bad(site, key, &format!("{kind:?} is no kind of hold")))?;
            let from = from
                .parse::<i64>()
                .ok()
                .and_then(|f| Timestamp::from_second(f).ok())
                .ok_or_else(|| bad(site, key, &format!("{from:?} is not a time")))?;
            out.shortfalls.push(Shortfall {
                day: day.to_string(),
                held,
                from,
                secs: get_n(i, "held_secs")
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0),
                max_short: num("max_short")?,
            });
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// Which items `read_all` brings back. The scan reads (and DynamoDB charges) the whole table
/// either way; the filter saves the transfer and the parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// The sites now: lease, status, standbys, open runs, and the day items from `since`
    /// (`YYYY-MM-DD`, a day before today anywhere on Earth) on.
    Now { since: String },
    /// A month's report: lease, status, the day, count and shortfall items of the local days
    /// `first..=last` (`YYYY-MM-DD`), and the runs that may overlap `from..to` (UTC times a day
    /// wider than the month, for every time zone).
    Month {
        first: String,
        last: String,
        from: Timestamp,
        to: Timestamp,
    },
}

impl Wanted {
    fn filter(&self) -> (String, HashMap<String, AttributeValue>) {
        let mut v = HashMap::from([
            (":lease".to_string(), s("lease")),
            (":status".to_string(), s("status")),
            (":run".to_string(), s("run#")),
        ]);
        match self {
            Wanted::Now { since } => {
                v.insert(":standby".into(), s("standby#"));
                v.insert(":d0".into(), s(format!("day#{since}")));
                v.insert(":d1".into(), s("day#~"));
                (
                    "#i IN (:lease, :status) OR begins_with(#i, :standby) \
                     OR (begins_with(#i, :run) AND attribute_not_exists(ended_at)) \
                     OR #i BETWEEN :d0 AND :d1"
                        .into(),
                    v,
                )
            }
            Wanted::Month {
                first,
                last,
                from,
                to,
            } => {
                for (k, stem) in [("d", "day"), ("c", "count"), ("s", "short")] {
                    v.insert(format!(":{k}0"), s(format!("{stem}#{first}")));
                    // '~' sorts after every character of a key's rest.
                    v.insert(format!(":{k}1"), s(format!("{stem}#{last}~")));
                }
                v.insert(":from".into(), s(from.to_string()));
                v.insert(":to".into(), s(to.to_string()));
                (
                    "#i IN (:lease, :status) OR #i BETWEEN :d0 AND :d1 \
                     OR #i BETWEEN :c0 AND :c1 OR #i BETWEEN :s0 AND :s1 \
                     OR (begins_with(#i, :run) AND started_at < :to \
                         AND (attribute_not_exists(ended_at) OR ended_at >= :from))"
                        .into(),
                    v,
                )
            }
        }
    }
}

/// An agent standing by for a site, as its last mark says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Standby {
    pub holder: String,
    pub stands_by_for: String,
    pub seen_at: Timestamp,
}

/// A run's item key: by instance and start, so a warm start's run is a new item.
fn run_key(instance: &str, start: Timestamp) -> String {
    format!("run#{instance}#{}", start.as_second())
}
