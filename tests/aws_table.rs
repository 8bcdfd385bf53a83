//! The shared guarantee table (`ledger.table`) against a real moto server's DynamoDB: what a
//! reservation, a refund, a count and the lease do, written the way the agent writes them and
//! read back the way another agent (a copy of the master, a restored one) would.

mod common;

use burst_agent::table::{Counted, Fence, InstanceRecord, Reserved, Table};
use common::moto::Moto;

const DAY: &str = "2026-12-07";

async fn table(moto: &Moto, site: &str) -> (burst_agent::aws::Aws, Table) {
    let aws = moto.aws().await;
    Table::create(&aws, "burst-agent")
        .await
        .expect("create the table");
    (aws.clone(), Table::new(aws, "burst-agent", site))
}

/// Takes the lease as `holder`; the fence it gives.
async fn lease(t: &Table, holder: &str) -> Fence {
    let now = t.read_lease().await.unwrap();
    let ok = t
        .write_lease(holder, now.map(|l| l.version), "2026-12-07T10:00:00Z")
        .await
        .unwrap();
    assert!(ok, "{holder} takes the lease");
    let l = t.read_lease().await.unwrap().unwrap();
    Fence {
        holder: l.holder,
        version: l.version,
    }
}

#[test]
fn the_day_never_goes_past_its_limit_and_a_retried_reservation_counts_once() {
    let moto = Moto::start();
    let rt = common::runtime();
    rt.block_on(async {
        let (aws, t) = table(&moto, "golf").await;
        // A second create finds it there and changes nothing.
        assert!(!Table::create(&aws, "burst-agent").await.unwrap());
        let f = lease(&t, "i-master/1").await;
        assert_eq!(
            t.reserve(&f, DAY, "a", 2, 3, "UTC").await.unwrap(),
            Reserved::Yes
        );
        // The same intent again (its answer was lost): no second charge.
        assert_eq!(
            t.reserve(&f, DAY, "a", 2, 3, "UTC").await.unwrap(),
            Reserved::Yes
        );
        assert_eq!(t.day_used(DAY).await.unwrap(), 2);
        // Two more would make 4 of 3.
        assert_eq!(
            t.reserve(&f, DAY, "b", 2, 3, "UTC").await.unwrap(),
            Reserved::CapSpent { used: 2 }
        );
        assert_eq!(
            t.reserve(&f, DAY, "c", 1, 3, "UTC").await.unwrap(),
            Reserved::Yes
        );
        assert_eq!(
            t.reserve(&f, DAY, "d", 1, 3, "UTC").await.unwrap(),
            Reserved::CapSpent { used: 3 }
        );
        // Another site's day is its own.
        let other = Table::new(aws.clone(), "burst-agent", "ramen");
        let g = lease(&other, "i-ramen/1").await;
        assert_eq!(
            other.reserve(&g, DAY, "a", 3, 3, "UTC").await.unwrap(),
            Reserved::Yes
        );
        assert_eq!(t.day_used(DAY).await.unwrap(), 3);
        assert_eq!(other.day_used(DAY).await.unwrap(), 3);
        // The next day starts at 0.
        assert_eq!(
            t.reserve(&f, "2026-12-08", "e", 3, 3, "UTC").await.unwrap(),
            Reserved::Yes
        );
    });
}

#[test]
fn a_refund_gives_units_back_once_however_often_it_is_sent() {
    let moto = Moto::start();
    let rt = common::runtime();
    rt.block_on(async {
        let (_, t) = table(&moto, "golf").await;
        let f = lease(&t, "i-master/1").await;
        assert_eq!(
            t.reserve(&f, DAY, "a", 2, 7, "UTC").await.unwrap(),
            Reserved::Yes
        );
        assert_eq!(
            t.reserve(&f, DAY, "b", 1, 7, "UTC").await.unwrap(),
            Reserved::Yes
        );
        assert!(t.refund("a").await.unwrap());
        assert!(
            !t.refund("a").await.unwrap(),
            "a second refund changes nothing"
        );
        assert!(!t.refund("never-reserved").await.unwrap());
        assert_eq!(t.day_used(DAY).await.unwrap(), 1);
        // A refunded intent is not reserved again by a retry of its own id.
        assert_eq!(
            t.reserve(&f, DAY, "a", 2, 7, "UTC").await.unwrap(),
            Reserved::CapSpent { used: 1 }
        );
        let site = t.read_site(0).await.unwrap();
        let a = site.intents.iter().find(|i| i.id == "a").unwrap();
        assert!(a.refunded);
        assert_eq!(a.units, 2);
        assert_eq!(site.days.get(DAY), Some(&1));
    });
}

#[test]
fn only_the_lease_holder_at_its_version_may_spend() {
    let moto = Moto::start();
    let rt = common::runtime();
    rt.block_on(async {
        let (_, t) = table(&moto, "golf").await;
        let old = lease(&t, "i-master/1").await;
        // Nobody may create a second lease item.
        assert!(!t.write_lease("i-copy/2", None, "x").await.unwrap());
        // Renewals are conditional on the version: a stale one is refused.
        assert!(t
            .write_lease("i-master/1", Some(old.version), "x")
            .await
            .unwrap());
        assert!(!t
            .write_lease("i-master/1", Some(old.version), "x")
            .await
            .unwrap());
        // The renewed holder at the old version may not spend, nor a copy that forges the
        // holder's name without its version.
        assert_eq!(
            t.reserve(&old, DAY, "a", 1, 7, "UTC").await.unwrap(),
            Reserved::LeaseLost
        );
        let copy = Fence {
            holder: "i-copy/2".into(),
            version: old.version + 1,
        };
        assert_eq!(
            t.reserve(&copy, DAY, "b", 1, 7, "UTC").await.unwrap(),
            Reserved::LeaseLost
        );
        assert_eq!(t.day_used(DAY).await.unwrap(), 0);
        // A takeover at the version it saw.
        let seen = t.read_lease().await.unwrap().unwrap();
        assert!(t
            .write_lease("i-copy/2", Some(seen.version), "x")
            .await
            .unwrap());
        let now = t.read_lease().await.unwrap().unwrap();
        assert_eq!(now.holder, "i-copy/2");
        assert_eq!(now.version, seen.version + 1);
        let f = Fence {
            holder: now.holder,
            version: now.version,
        };
        assert_eq!(
            t.reserve(&f, DAY, "c", 1, 7, "UTC").await.unwrap(),
            Reserved::Yes
        );
        // A clean stop gives it up: only its holder at its version may, and the item stays
        // (marked released at the next version), so nobody may create a fresh one.
        assert!(!t.release_lease("i-master/1", f.version, "y").await.unwrap());
        assert!(t.release_lease(&f.holder, f.version, "y").await.unwrap());
        let gone = t.read_lease().await.unwrap().unwrap();
        assert!(gone.released, "{gone:?}");
        assert_eq!(
            (gone.holder.as_str(), gone.version),
            ("i-copy/2", f.version + 1)
        );
        assert!(!t.write_lease("i-stage/3", None, "x").await.unwrap());
        assert_eq!(
            t.reserve(&f, DAY, "d", 1, 7, "UTC").await.unwrap(),
            Reserved::LeaseLost
        );
        // The next holder takes it at the released version, and it is held again.
        assert!(t
            .write_lease("i-copy/4", Some(gone.version), "x")
            .await
            .unwrap());
        let back = t.read_lease().await.unwrap().unwrap();
        assert!(!back.released && back.holder == "i-copy/4", "{back:?}");
    });
}

#[test]
fn an_instance_counts_once_a_day_and_records_read_back_without_expired_items() {
    let moto = Moto::start();
    let rt = common::runtime();
    rt.block_on(async {
        let (_, t) = table(&moto, "golf").await;
        let f = lease(&t, "i-master/1").await;
        // The midnight carry-over: unconditional, once per instance and day.
        assert_eq!(
            t.count(None, DAY, "i-1", None, "UTC").await.unwrap(),
            Counted::Yes
        );
        assert_eq!(
            t.count(None, DAY, "i-1", None, "UTC").await.unwrap(),
            Counted::Already
        );
        // A warm start that costs a unit obeys the limit.
        assert_eq!(
            t.count(Some(&f), DAY, "i-2", Some(2), "UTC").await.unwrap(),
            Counted::Yes
        );
        assert_eq!(
            t.count(Some(&f), DAY, "i-3", Some(2), "UTC").await.unwrap(),
            Counted::CapSpent { used: 2 }
        );
        assert_eq!(t.day_used(DAY).await.unwrap(), 2);
        t.record_instance(&InstanceRecord {
            id: "i-1".into(),
            intent: "a".into(),
            client_token: "a-1".into(),
            day: DAY.into(),
            launched_at: "2026-12-07T01:00:00Z".into(),
        })
        .await
        .unwrap();
        // A day 14 months ago has expired, though DynamoDB may not have deleted it yet.
        assert_eq!(
            t.reserve(&f, "2025-10-01", "old", 1, 7, "UTC")
                .await
                .unwrap(),
            Reserved::Yes
        );
        let now = jiff::Timestamp::now().as_second();
        let site = t.read_site(now).await.unwrap();
        assert_eq!(site.days.get(DAY), Some(&2));
        assert!(!site.days.contains_key("2025-10-01"), "{:?}", site.days);
        assert!(site.intents.iter().all(|i| i.id != "old"));
        assert_eq!(site.instances.len(), 1);
        assert_eq!(site.instances[0].client_token, "a-1");
        assert_eq!(site.lease.unwrap().holder, "i-master/1");
        assert_eq!(site.counted.len(), 2);
    });
}
