//! The rows behind the simple and table formats of `member list` and `endpoint ...`
//! (etcdctl's `makeMemberListTable`, `makeEndpointHealthTable`, `makeEndpointStatusTable`,
//! `makeEndpointHashKVTable`).

use synod_api::etcdserverpb::MemberListResponse;

use super::{EndpointHash, EndpointHealth, EndpointStatus};

pub const MEMBER_LIST_HEADER: &[&str] = &["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"];

pub const ENDPOINT_HEALTH_HEADER: &[&str] = &["endpoint", "health", "took", "error"];

pub const ENDPOINT_STATUS_HEADER: &[&str] = &[
    "endpoint",
    "ID",
    "version",
    "db size",
    "is leader",
    "is learner",
    "raft term",
    "raft index",
    "raft applied index",
    "errors",
];

pub const ENDPOINT_HASHKV_HEADER: &[&str] = &["endpoint", "hash"];

pub fn member_list(response: &MemberListResponse) -> Vec<Vec<String>> {
    response
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{:x}", m.id),
                if m.name.is_empty() { "unstarted" } else { "started" }.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

pub fn endpoint_health(health: &[EndpointHealth]) -> Vec<Vec<String>> {
    health
        .iter()
        .map(|h| vec![h.endpoint.clone(), h.health.to_string(), h.took.clone(), h.error.clone()])
        .collect()
}

pub fn endpoint_hashkv(hashes: &[EndpointHash]) -> Vec<Vec<String>> {
    hashes.iter().map(|h| vec![h.endpoint.clone(), h.hash.hash.to_string()]).collect()
}

pub fn endpoint_status(statuses: &[EndpointStatus]) -> Vec<Vec<String>> {
    statuses
        .iter()
        .map(|s| {
            let status = &s.status;
            let member_id = status.header.as_ref().map_or(0, |h| h.member_id);
            vec![
                s.endpoint.clone(),
                format!("{member_id:x}"),
                status.version.clone(),
                si_bytes(u64::try_from(status.db_size).unwrap_or(0)),
                (status.leader == member_id).to_string(),
                status.is_learner.to_string(),
                status.raft_term.to_string(),
                status.raft_index.to_string(),
                status.raft_applied_index.to_string(),
                status.errors.join(", "),
            ]
        })
        .collect()
}

/// A size in SI units as go-humanize's `Bytes` writes it: `9 B`, `143 kB`, `2.1 MB`.
pub fn si_bytes(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let exponent = ((size as f64).ln() / 1000f64.ln()).floor();
    let unit = UNITS[(exponent as usize).min(UNITS.len() - 1)];
    let value = ((size as f64) / 1000f64.powf(exponent) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 { format!("{value:.1} {unit}") } else { format!("{value:.0} {unit}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes round as go-humanize rounds them.
    #[test]
    fn si_sizes() {
        let cases = [
            (0, "0 B"),
            (9, "9 B"),
            (10, "10 B"),
            (999, "999 B"),
            (1000, "1.0 kB"),
            (143_360, "143 kB"),
            (20_480, "20 kB"),
            (2_150_000, "2.2 MB"),
            (2_147_483_648, "2.1 GB"),
        ];
        for (size, text) in cases {
            assert_eq!(si_bytes(size), text, "{size}");
        }
    }
}
