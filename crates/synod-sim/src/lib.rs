//! synod-sim: deterministic simulation of a synod cluster under faults.
//!
//! A run puts 3 or 5 members — synod's own consensus, state machine, storage and API code
//! — on a simulated network (`net`), on simulated disks that lose what was not synced when
//! the power goes (`synod_storage::sim_disk`), and on tokio's paused clock, all on one
//! thread. Every random choice comes from the seed, so a seed replays bit for bit; a run
//! ends with a trace hash that shows it. `sim` holds the scenario and its checks.

pub mod net;
mod requests;
pub mod sim;

pub use sim::{Options, RunOutcome, Setup, run, run_within};
