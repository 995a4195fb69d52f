//! Member and cluster ids: derived from the bootstrap flags, then persisted.
//!
//! Like etcd, a member's id is a hash of its peer URLs and the cluster token, and the
//! cluster id a hash of the initial members' ids, so that members bootstrapped with the
//! same flags agree on both without talking, and two clusters started from different tokens
//! never mistake each other's members. Once written to the data directory the identity is
//! never recomputed: a restart ignores the bootstrap flags, as etcd does.

use sha2::{Digest, Sha256};
use synod_api::synodpb::Identity;
use synod_base::{ClusterId, MemberId};

use crate::config::{Config, InitialMember, Url};

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// The id of a member with these peer URLs in a cluster with this token.
pub fn member_id(peer_urls: &[Url], token: &str) -> MemberId {
    let mut urls: Vec<String> = peer_urls.iter().map(Url::to_string).collect();
    urls.sort();
    MemberId(hash64(&[b"synod member", urls.join(",").as_bytes(), token.as_bytes()]))
}

/// The id of a cluster bootstrapped with these members and this token.
pub fn cluster_id(members: &[InitialMember], token: &str) -> ClusterId {
    let mut ids: Vec<u64> = members.iter().map(|m| member_id(&m.peer_urls, token).0).collect();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    ClusterId(hash64(&[b"synod cluster", &bytes, token.as_bytes()]))
}

/// The identity a new member takes from its flags.
pub fn bootstrap(config: &Config) -> Identity {
    Identity {
        cluster_id: cluster_id(&config.initial_cluster, &config.initial_cluster_token).0,
        member_id: member_id(&config.initial_advertise_peer_urls, &config.initial_cluster_token).0,
        name: config.name.clone(),
        peer_urls: config.initial_advertise_peer_urls.iter().map(Url::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(port: u16) -> Url {
        Url { host: "127.0.0.1".into(), port, tls: false }
    }

    /// Ids depend on the peer URLs (in any order) and on the token, on nothing else.
    #[test]
    fn ids_are_deterministic() {
        let a = member_id(&[url(1), url(2)], "t");
        assert_eq!(a, member_id(&[url(2), url(1)], "t"));
        assert_ne!(a, member_id(&[url(1), url(2)], "other"));
        assert_ne!(a, member_id(&[url(1)], "t"));
        let members = vec![
            InitialMember { name: "a".into(), peer_urls: vec![url(1)] },
            InitialMember { name: "b".into(), peer_urls: vec![url(2)] },
        ];
        let reversed: Vec<_> = members.iter().rev().cloned().collect();
        assert_eq!(cluster_id(&members, "t"), cluster_id(&reversed, "t"));
        assert_ne!(cluster_id(&members, "t"), cluster_id(&members[..1], "t"));
    }
}
