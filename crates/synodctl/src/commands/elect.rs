//! `elect <election-name> [proposal]`: campaigns through etcd's Election service with a
//! session lease, prints the leader's key and value once elected (as etcdctl prints a
//! get), and holds the leadership until interrupted, then resigns. `elect -l
//! <election-name>` observes: it prints the leader's key and value at each change.

use synod_api::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use synod_api::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};

use super::Context;
use super::lock::{keep_alive, stop};
use crate::cli::ElectArgs;
use crate::client::request_error;
use crate::exit::CtlError;

pub async fn run(context: &Context, args: &ElectArgs) -> anyhow::Result<()> {
    let (name, proposal) = match (args.args.as_slice(), args.listen) {
        ([name], true) => (name, None),
        ([name, proposal], false) => (name, Some(proposal)),
        ([_], false) => return Err(CtlError::bad_args("no proposal argument but -l not set").into()),
        ([_, _], true) => return Err(CtlError::bad_args("proposal given but -l is set").into()),
        _ => {
            return Err(CtlError::bad_args(
                "elect takes one election name argument and an optional proposal argument",
            )
            .into());
        }
    };
    if args.ttl <= 0 {
        return Err(CtlError::bad_args("--ttl must be a positive number of seconds").into());
    }
    let client = context.connect().await?;
    let mut elections = client.election();
    let Some(proposal) = proposal else {
        let request = LeaderRequest { name: name.as_bytes().to_vec() };
        let mut leaders = tokio::select! {
            observed = elections.observe(request) => observed.map_err(|s| CtlError::request(request_error(&s)))?.into_inner(),
            _ = stop() => return Ok(()),
        };
        loop {
            let next = tokio::select! {
                next = leaders.message() => next.map_err(|s| CtlError::request(request_error(&s)))?,
                _ = stop() => return Ok(()),
            };
            let Some(leader) = next else {
                return Err(CtlError::request("observing election failed").into());
            };
            if let Some(kv) = leader.kv {
                println!("{}\n{}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
            }
        }
    };
    let lease = client.call(client.lease().lease_grant(LeaseGrantRequest { ttl: args.ttl, id: 0 })).await?.id;
    let mut keepalive = tokio::spawn(keep_alive(client.clone(), lease, args.ttl));
    let campaign =
        CampaignRequest { name: name.as_bytes().to_vec(), lease, value: proposal.as_bytes().to_vec() };
    let outcome = async {
        let elected = tokio::select! {
            elected = elections.campaign(campaign) => elected.map_err(|s| CtlError::request(request_error(&s)))?.into_inner(),
            _ = stop() => return Ok(()),
        };
        let leader = elected.leader.unwrap_or_default();
        println!("{}\n{proposal}", String::from_utf8_lossy(&leader.key));
        // Held until interrupted, or until the session's lease is lost (then another
        // candidate may lead already, and this one must stop acting as the leader).
        tokio::select! {
            () = stop() => {}
            _ = &mut keepalive => return Err(CtlError::request("elect: session expired")),
        }
        elections.resign(ResignRequest { leader: Some(leader) }).await.map_err(|s| CtlError::request(request_error(&s)))?;
        Ok::<(), CtlError>(())
    }
    .await;
    keepalive.abort();
    let _ = client.call(client.lease().lease_revoke(LeaseRevokeRequest { id: lease })).await;
    Ok(outcome?)
}
