//! The test network: one network namespace per member, all on one bridge, and an nftables
//! table inside each namespace that cuts links between members.
//!
//! Every name this module makes starts with [`PREFIX`], so the leftovers of a run that died
//! without cleaning up (a `kill -9` of the harness, a power cut) can be found and removed by
//! the next run. Rules live *inside* the member namespaces, never in the host's tables: a
//! crash of the harness cannot leave the host with a broken firewall.
//!
//! Topology, with the harness in the root namespace:
//!
//! ```text
//!   root ns: synodc-br 10.77.0.1/24 ── synodc-a-h ══ eth0 10.77.0.2 (ns synodc-a)
//!                                    ── synodc-b-h ══ eth0 10.77.0.3 (ns synodc-b)  ...
//! ```
//!
//! Partitions only ever name member addresses, so traffic from 10.77.0.1 (the clients and
//! the peer proxies, see `proxy`) always gets through.

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The start of every namespace, link and table name this harness makes.
pub const PREFIX: &str = "synodc";
/// The bridge all member veths hang on; it carries the host's address on the test subnet.
const BRIDGE: &str = "synodc-br";
/// The nftables table (family inet) inside each member namespace.
const TABLE: &str = "synodc";
/// Held (flock) for a whole run, so two runs never share namespaces or addresses.
const LOCK_PATH: &str = "/run/synod-chaos.lock";
/// The host's address on the test subnet: the source of all client and proxy traffic.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Members get .2, .3, ... so a /24 holds at most this many.
pub const MEMBERS_MAX: usize = 9;

/// The address of member `index` (0-based).
pub fn member_ip(index: usize) -> Ipv4Addr {
    assert!(index < MEMBERS_MAX, "member index {index} is beyond the test subnet plan");
    Ipv4Addr::new(10, 77, 0, 2 + index as u8)
}

/// The member index an address belongs to, if it is a member's.
pub fn member_index(ip: Ipv4Addr, members: usize) -> Option<usize> {
    let [a, b, c, d] = ip.octets();
    let index = usize::from(d).checked_sub(2)?;
    ((a, b, c) == (10, 77, 0) && index < members).then_some(index)
}

/// The network namespace member `name` runs in.
pub fn netns_name(name: &str) -> String {
    format!("{PREFIX}-{name}")
}

/// The path `ip netns add` mounts the namespace at, which `setns` opens.
pub fn netns_path(name: &str) -> String {
    format!("/var/run/netns/{}", netns_name(name))
}

/// The root-namespace end of member `name`'s veth pair (Linux allows 15 characters).
fn host_veth(name: &str) -> String {
    format!("{PREFIX}-{name}-h")
}

/// Moves the calling thread into member `name`'s network namespace. Only ever called on a
/// thread that does nothing else afterwards (a short-lived one, or a child before `exec`),
/// because a thread cannot portably come back.
pub fn enter(name: &str) -> std::io::Result<()> {
    let ns = File::open(netns_path(name))?;
    // SAFETY: setns on a valid, open namespace fd only changes this thread's namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The exclusive lock that keeps two runs apart; released when dropped (or at exit).
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock, waiting up to `wait` for another run to finish. The wait is a tokio
    /// sleep so that SIGINT still ends a harness that is waiting.
    pub async fn acquire(wait: Duration) -> Result<RunLock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .with_context(|| format!("open the run lock {LOCK_PATH}"))?;
        let deadline = Instant::now() + wait;
        let mut told = false;
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(RunLock { _file: file });
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error).with_context(|| format!("lock {LOCK_PATH}"));
            }
            if Instant::now() >= deadline {
                bail!("another synod-chaos run still holds {LOCK_PATH} after {wait:?}");
            }
            if !told {
                eprintln!("synod-chaos: waiting for another run to release {LOCK_PATH}");
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The namespaces, veths and bridge of one run. Dropping it tears everything down; the
/// members must be stopped first (their namespaces would otherwise live on, unnamed).
pub struct Network {
    members: Vec<String>,
}

impl Network {
    /// Removes the leftovers of an earlier run, then builds the network for `members`.
    pub fn create(members: &[String]) -> Result<Network> {
        if members.len() > MEMBERS_MAX {
            bail!("at most {MEMBERS_MAX} members fit the test subnet");
        }
        remove_leftovers().context("remove the leftovers of an earlier run")?;
        refuse_subnet_in_use()?;
        // From here on a failure drops `network`, which removes what was made so far.
        let network = Network { members: members.to_vec() };
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        for (index, name) in members.iter().enumerate() {
            let ns = netns_name(name);
            let veth = host_veth(name);
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &veth, "master", BRIDGE, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", member_ip(index)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            nft(
                name,
                &format!(
                    "table inet {TABLE} {{\n\
                     chain input {{ type filter hook input priority 0; policy accept; }}\n\
                     chain output {{ type filter hook output priority 0; policy accept; }}\n\
                     }}\n"
                ),
            )?;
        }
        Ok(network)
    }

    /// The member names, in index order.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Removes everything this run made. Idempotent: what is already gone is skipped.
    pub fn teardown(&mut self) {
        if let Err(error) = remove_leftovers() {
            eprintln!("synod-chaos: tearing down the test network: {error:#}");
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Makes the cut links exactly `cuts` (ordered pairs of member indexes, `from` → `to`),
/// replacing whatever was cut before: an empty list heals everything.
///
/// A cut `X → Y` drops packets from X to Y both when X sends them and when Y receives
/// them. Because TCP needs acknowledgements, a one-way cut stalls connections both ways,
/// but it still differs from a symmetric one: Y's packets reach X.
///
/// Blocks for a few milliseconds per member (one `nft` process each).
pub fn set_cuts(members: &[String], cuts: &[(usize, usize)]) -> Result<()> {
    for (index, name) in members.iter().enumerate() {
        let mut script = format!("flush table inet {TABLE}\n");
        for &(from, to) in cuts {
            if from == index {
                script += &format!("add rule inet {TABLE} output ip daddr {} drop\n", member_ip(to));
            }
            if to == index {
                script += &format!("add rule inet {TABLE} input ip saddr {} drop\n", member_ip(from));
            }
        }
        nft(name, &script).with_context(|| format!("set the cut links of member {name}"))?;
    }
    Ok(())
}

/// Fails with a clear message when the tools or privileges this harness needs are missing.
pub fn check_prerequisites() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("synod-chaos must run as root: it creates network namespaces and nftables rules");
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !found.is_ok_and(|status| status.success()) {
            bail!("`{tool}` is missing or broken: install it with apt-get install {package}");
        }
    }
    Ok(())
}

/// Removes every namespace (with any process still inside it), link and bridge whose name
/// starts with [`PREFIX`]. Their nftables tables go with their namespaces.
/// Refuses to run when the host already has an address or route in the test subnet: the
/// bridge would take that traffic over for the length of the run.
fn refuse_subnet_in_use() -> Result<()> {
    let octets = HOST_IP.octets();
    let prefix = format!("{}.{}.{}.", octets[0], octets[1], octets[2]);
    let addresses = ip(&["-o", "-4", "addr", "show"])?;
    let routes = ip(&["-4", "route", "show", "table", "all"])?;
    let clash = addresses.lines().chain(routes.lines()).find(|line| line.contains(&prefix));
    match clash {
        Some(line) => bail!(
            "the test subnet {prefix}0/24 is already in use on this host ({}); synod-chaos will not take it over",
            line.trim()
        ),
        None => Ok(()),
    }
}

/// Removes every namespace, link and process an earlier run may have left, going on past
/// failures so that one stuck piece does not keep the rest (the bridge above all) in place;
/// returns the first failure.
fn remove_leftovers() -> Result<()> {
    let mut first_error: Option<anyhow::Error> = None;
    let mut note = |result: Result<()>| {
        if let Err(error) = result
            && first_error.is_none()
        {
            first_error = Some(error);
        }
    };
    let listing = ip(&["netns", "list"])?;
    for ns in listing.lines().filter_map(|line| line.split_whitespace().next()) {
        if !ns.starts_with(&format!("{PREFIX}-")) {
            continue;
        }
        // Processes of a harness that died without cleaning up (members die with their
        // harness, so this is only for the case where that failed too).
        let pids = ip(&["netns", "pids", ns]).unwrap_or_default();
        for pid in pids.lines().filter_map(|pid| pid.trim().parse::<libc::pid_t>().ok()) {
            if pid != std::process::id() as libc::pid_t {
                eprintln!("synod-chaos: killing leftover process {pid} in namespace {ns}");
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        run_quiet(Command::new("ip").args(["netns", "exec", ns, "nft", "delete", "table", "inet", TABLE]));
        note(ignore_missing(ip(&["netns", "del", ns])));
    }
    let links = ip(&["-o", "link", "show"])?;
    for line in links.lines() {
        // "7: synodc-a-h@if2: <BROADCAST,...": the name sits between the first ": " and "@" or ":".
        let Some(name) = line.split(": ").nth(1).and_then(|rest| rest.split(['@', ':']).next()) else {
            continue;
        };
        if name.starts_with(&format!("{PREFIX}-")) && name != BRIDGE {
            note(ignore_missing(ip(&["link", "del", name])));
        }
    }
    note(ignore_missing(ip(&["link", "del", BRIDGE])));
    first_error.map_or(Ok(()), Err)
}

/// Treats "does not exist" errors as success, for idempotent teardown.
fn ignore_missing(result: Result<String>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(error) => {
            let text = format!("{error:#}");
            if ["Cannot find device", "No such file", "does not exist", "not found"]
                .iter()
                .any(|missing| text.contains(missing))
            {
                Ok(())
            } else {
                Err(error)
            }
        }
    }
}

/// Runs `ip` with `args`; its stdout, or an error carrying its stderr.
fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args), None)
}

/// Runs an nft script inside member `name`'s namespace, atomically (`nft -f -`).
fn nft(name: &str, script: &str) -> Result<String> {
    run(Command::new("ip").args(["netns", "exec", &netns_name(name), "nft", "-f", "-"]), Some(script))
}

fn run(command: &mut Command, stdin: Option<&str>) -> Result<String> {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {what}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).with_context(|| format!("write the input of {what}"))?;
    }
    let output = child.wait_with_output().with_context(|| format!("wait for {what}"))?;
    if !output.status.success() {
        bail!("{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a best-effort cleanup command whose failure means there was nothing to clean.
fn run_quiet(command: &mut Command) {
    let _ = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member's address maps back to its index; the host's maps to none.
    #[test]
    fn member_addresses_map_back_to_indexes() {
        assert_eq!(member_ip(0), Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(member_index(member_ip(2), 3), Some(2));
        assert_eq!(member_index(member_ip(3), 3), None);
        assert_eq!(member_index(HOST_IP, 3), None);
        assert_eq!(member_index(Ipv4Addr::new(10, 78, 0, 2), 3), None);
    }

    /// Every interface name the run makes fits Linux's 15-character limit.
    #[test]
    fn names_fit_linux_interface_names() {
        assert!(host_veth("abcde").len() <= 15);
        assert!(BRIDGE.len() <= 15);
    }
}
