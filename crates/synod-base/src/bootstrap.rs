//! etcd's bootstrap flags: `--initial-cluster`'s `name=URL,...` list, and the check that it
//! lists this member with exactly its `--initial-advertise-peer-urls`. The server reads
//! them at a first start, and `synodctl snapshot restore` checks them before it writes a
//! data dir for them, as etcdctl does; both parse URLs their own way, hence `parse_url`.

/// One member of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember<U> {
    pub name: String,
    pub peer_urls: Vec<U>,
}

/// Parses `name=url,name=url`; a name listed twice gets both URLs, as in etcd.
pub fn parse_initial_cluster<U>(
    text: &str,
    parse_url: impl Fn(&str) -> Result<U, String>,
) -> Result<Vec<InitialMember<U>>, String> {
    let mut members: Vec<InitialMember<U>> = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = pair
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster entry {pair:?} is not name=URL"))?;
        let url = parse_url(url).map_err(|e| format!("--initial-cluster: {e}"))?;
        match members.iter_mut().find(|m| m.name == name) {
            Some(member) => member.peer_urls.push(url),
            None => members.push(InitialMember { name: name.to_string(), peer_urls: vec![url] }),
        }
    }
    if members.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    Ok(members)
}

/// Checks that `cluster` lists the member `name` with the peer URLs it advertises, no more
/// and no fewer (etcd's `VerifyBootstrap`).
pub fn check_own_entry<U: ToString>(
    name: &str,
    cluster: &[InitialMember<U>],
    advertised: &[U],
) -> Result<(), String> {
    let mut own: Vec<String> =
        cluster.iter().filter(|m| m.name == name).flat_map(|m| &m.peer_urls).map(U::to_string).collect();
    if own.is_empty() {
        return Err(format!("--initial-cluster does not list this member's name {name:?}"));
    }
    let mut advertised: Vec<String> = advertised.iter().map(U::to_string).collect();
    own.sort();
    advertised.sort();
    if own != advertised {
        return Err(format!(
            "--initial-cluster has {name}={} but --initial-advertise-peer-urls is {}",
            own.join(","),
            advertised.join(",")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(url: &str) -> Result<String, String> {
        if url.starts_with("http://") { Ok(url.to_string()) } else { Err(format!("bad URL {url:?}")) }
    }

    #[test]
    fn a_name_listed_twice_gets_both_urls() {
        let cluster =
            parse_initial_cluster("a=http://1:2380, b=http://2:2380,a=http://3:2380", text).unwrap();
        assert_eq!(cluster.len(), 2);
        assert_eq!(cluster[0].peer_urls, ["http://1:2380", "http://3:2380"]);
        check_own_entry("a", &cluster, &["http://3:2380".to_string(), "http://1:2380".to_string()]).unwrap();
    }

    #[test]
    fn bad_lists_and_a_missing_or_different_own_entry_are_refused() {
        assert!(parse_initial_cluster("", text).unwrap_err().contains("empty"));
        assert!(parse_initial_cluster("a", text).unwrap_err().contains("not name=URL"));
        assert!(parse_initial_cluster("a=ftp://x", text).unwrap_err().contains("bad URL"));
        let cluster = parse_initial_cluster("a=http://1:2380,b=http://2:2380", text).unwrap();
        assert!(check_own_entry("c", &cluster, &[]).unwrap_err().contains("does not list"));
        let err = check_own_entry("a", &cluster, &["http://2:2380".to_string()]).unwrap_err();
        assert_eq!(
            err,
            "--initial-cluster has a=http://1:2380 but --initial-advertise-peer-urls is http://2:2380"
        );
    }
}
