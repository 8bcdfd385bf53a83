//! The simulation keeps every promise over many seeds, replays a seed exactly, and can fail:
//! each sabotage breaks one promise on purpose, and the checks must name it.

use super::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

/// `burst-agent faultsim` runs 10,000 seeds in the test command (scripts/test.sh, release
/// build); this is the debug build's share.
#[test]
fn seeds_keep_every_promise() {
    let s = run(0, 1500);
    assert_eq!(s.seeds, 1500);
    assert!(
        s.faults > 10_000 && s.crashes > 1000 && s.launched > 1000 && s.takeovers > 100,
        "the seeds must exercise faults, crashes and launches: {s:?}"
    );
    let failed: Vec<String> = s
        .failed
        .iter()
        .map(|r| format!("{:?}; replay: {}", r.violation, replay_command(r.seed)))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn a_seed_replays_exactly() {
    let a = block_on(run_seed(7));
    let b = block_on(run_seed(7));
    assert_eq!(format!("{:?}", a.stats), format!("{:?}", b.stats));
    assert_eq!(a.ticks, b.ticks);
    let c = block_on(run_seed(8));
    assert_ne!(format!("{:?}", a.stats), format!("{:?}", c.stats));
}

/// The first violation sabotage `s` causes in seeds 0..200, if any.
fn first_violation(s: Sabotage) -> Option<String> {
    (0..200).find_map(|seed| block_on(run_seed_with(seed, s)).violation.map(|(_, v)| v))
}

#[test]
fn registering_a_slave_without_content_is_caught() {
    let v = first_violation(Sabotage::HooksLie).expect("no violation found");
    assert!(
        v.contains("registered with the ELB before its content sync"),
        "{v}"
    );
}

#[test]
fn trusting_tags_is_caught() {
    let v = first_violation(Sabotage::TagsTrusted).expect("no violation found");
    // The stranger's instance, claimed by its tags: synced, registered or terminated.
    assert!(v.contains("i-0forged"), "{v}");
    assert!(v.contains("not this agent's"), "{v}");
}

#[test]
fn exceeding_the_cap_is_caught() {
    let v = first_violation(Sabotage::CapRaised).expect("no violation found");
    assert!(v.contains("alive today, cap"), "{v}");
}

#[test]
fn losing_track_of_slaves_is_caught() {
    let v = first_violation(Sabotage::StateLost).expect("no violation found");
    assert!(v.contains("does not track it"), "{v}");
}

/// What the group tag no longer finds, the records do: a renamed group (or a removed tag)
/// loses no slave.
#[test]
fn a_renamed_group_loses_nothing_the_records_name() {
    assert_eq!(first_violation(Sabotage::GroupRenamed), None);
}

#[test]
fn overstaying_a_phase_is_caught() {
    let v = first_violation(Sabotage::TimeoutsRaised).expect("no violation found");
    assert!(
        v.contains("its deadline is") || v.contains("still counted as in service"),
        "{v}"
    );
}

#[test]
fn trusting_the_wall_clock_is_caught() {
    let v = first_violation(Sabotage::ClockTrusted).expect("no violation found");
    assert!(
        // The agent's own clock jumps (the drift check), a slave is ended early, or it sees a
        // phase overstayed by the whole step.
        v.contains("the agent's clock is")
            || v.contains("ended as overdue")
            || v.contains("its deadline is")
            // A stepped wall clock flips the cap day under the ledger.
            || v.contains("the ledger charges")
            // A step back stretches a drain, or a launch's settling, past the end of the run.
            || v.contains("still run")
            || v.contains("still unresolved at the end"),
        "{v}"
    );
}

/// Issue 28: a holder paused past its lease wakes mid-tick; were its calls not fenced, it would
/// change the fleet while the copy that took over holds the lease.
#[test]
fn a_paused_holder_whose_calls_are_not_fenced_is_caught() {
    let v = first_violation(Sabotage::Unfenced).expect("no violation found");
    assert!(v.contains("holds the site's lease"), "{v}");
}

/// Issue 28: a copy of the master with a stale state directory spends the day again, or loses
/// track of what the master launched, without the shared table.
#[test]
fn a_copy_without_the_shared_table_is_caught() {
    let v = first_violation(Sabotage::CopyWithoutTable).expect("no violation found");
    assert!(
        v.contains("alive today, cap")
            || v.contains("does not track it")
            || v.contains("the ledger charges"),
        "{v}"
    );
}

/// Issue 28: what StateLost loses without the table, the table's records keep.
#[test]
fn a_wiped_state_directory_loses_nothing_the_table_names() {
    assert_eq!(first_violation(Sabotage::StateWiped), None);
}
