//! etcd's Lease service: Grant, Revoke, KeepAlive, TimeToLive and Leases.
//!
//! Grants and revocations are replicated commands any member proposes. Renewals and
//! remaining TTLs are the leader's to answer (see [`crate::lease`]); a follower hands them
//! to the leader over the peer transport.

use std::pin::Pin;

use futures::Stream;
use synod_api::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, lease_server,
};
use synod_api::synodpb::command;
use synod_consensus::{LeaderCall, LeaderReply};
use synod_mvcc::Response;
use tokio_stream::StreamExt as _;
use tonic::{Request, Status, Streaming};

use crate::api::{Api, Reply, ServedByLearner};
use crate::auth::Credentials;
use crate::errors;
use crate::pace::Pace;
use synod_base::limits;

/// What a lease costs against the quota: etcd charges a lease's stored size; a fixed
/// amount is close enough and keeps a grant from slipping past a full store.
const LEASE_COST: u64 = 64;

impl Api {
    pub async fn lease_grant(&self, request: LeaseGrantRequest) -> Result<LeaseGrantResponse, Status> {
        self.check_quota(LEASE_COST).await?;
        // The serving member picks the id, as etcd's does, so the entry applies the same
        // everywhere; the top bit stays clear as in etcd's ids.
        let id = match request.id {
            0 => loop {
                let id = (synod_consensus::random_u64() >> 1) as i64;
                if id != 0 {
                    break id;
                }
            },
            id => id,
        };
        let ttl = self.lessor().clamp_ttl(request.ttl);
        let grant = LeaseGrantRequest { id, ttl };
        match self
            .propose(synod_api::synodpb::Command {
                op: Some(command::Op::LeaseGrant(grant)),
                ..Default::default()
            })
            .await?
        {
            Response::LeaseGrant(mut response) => {
                self.lessor().granted(response.id, response.ttl);
                self.fill(&mut response.header);
                Ok(response)
            }
            _ => Err(errors::unexpected("lease grant")),
        }
    }

    pub async fn lease_revoke(&self, request: LeaseRevokeRequest) -> Result<LeaseRevokeResponse, Status> {
        let id = request.id;
        match self
            .propose(synod_api::synodpb::Command {
                op: Some(command::Op::LeaseRevoke(request)),
                ..Default::default()
            })
            .await?
        {
            Response::LeaseRevoke(mut response) => {
                self.lessor().revoked(id);
                self.fill(&mut response.header);
                Ok(response)
            }
            _ => Err(errors::unexpected("lease revoke")),
        }
    }

    /// One renewal: TTL 0 in the answer when the lease does not exist (etcd's answer).
    pub async fn lease_renew(&self, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        let call = LeaderCall::LeaseKeepAlive(LeaseKeepAliveRequest { id });
        match self.consensus().call_leader(call).await.map_err(errors::consensus)? {
            LeaderReply::LeaseKeepAlive(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            _ => Err(errors::unexpected("lease keep-alive")),
        }
    }

    pub async fn lease_time_to_live(
        &self,
        request: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, Status> {
        match self
            .consensus()
            .call_leader(LeaderCall::LeaseTimeToLive(request))
            .await
            .map_err(errors::consensus)?
        {
            LeaderReply::LeaseTimeToLive(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            _ => Err(errors::unexpected("lease time-to-live")),
        }
    }

    pub async fn lease_leases(&self, _request: LeaseLeasesRequest) -> Result<LeaseLeasesResponse, Status> {
        self.linearizable(false).await?;
        let leases = self.blocking(|| self.state().leases()).map_err(errors::storage)?;
        Ok(LeaseLeasesResponse {
            header: Some(self.header(0)),
            leases: leases.into_iter().map(|l| LeaseStatus { id: l.id }).collect(),
        })
    }
}

impl ServedByLearner for LeaseGrantRequest {}
impl ServedByLearner for LeaseRevokeRequest {}
impl ServedByLearner for LeaseTimeToLiveRequest {}
impl ServedByLearner for LeaseLeasesRequest {}
impl ServedByLearner for LeaseKeepAliveRequest {}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl lease_server::Lease for Api {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Reply<LeaseGrantResponse> {
        self.unary(request, |r| Api::lease_grant(self, r)).await
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Reply<LeaseRevokeResponse> {
        self.unary(request, |r| Api::lease_revoke(self, r)).await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// Renews on every request of the stream, in order, until the client closes it; a
    /// failure (no leader, say) ends the stream with etcd's error, as etcd's does.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Reply<Self::LeaseKeepAliveStream> {
        self.admit(&LeaseKeepAliveRequest::default(), &Credentials::from(&request))?;
        let responses = self.keep_alive_stream(request.into_inner());
        Ok(tonic::Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Reply<LeaseTimeToLiveResponse> {
        self.unary(request, |r| Api::lease_time_to_live(self, r)).await
    }

    async fn lease_leases(&self, request: Request<LeaseLeasesRequest>) -> Reply<LeaseLeasesResponse> {
        self.unary(request, |r| Api::lease_leases(self, r)).await
    }
}

impl Api {
    /// The responses of one KeepAlive stream: a renewal per request, ending at the first
    /// failure or when the client stops sending. The gRPC service and the JSON gateway
    /// share it.
    pub(crate) fn keep_alive_stream(
        &self,
        requests: impl Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + 'static,
    ) -> impl Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static {
        keep_alive_responses(self.clone(), requests)
    }
}

fn keep_alive_responses(
    api: Api,
    requests: impl Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + 'static,
) -> impl Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static {
    // A flood of renewals waits its turn (one renewal is in flight at a time anyway).
    let pace = std::sync::Arc::new(tokio::sync::Mutex::new(Pace::new(limits::STREAM_REQUESTS_PER_SECOND)));
    let renewals = requests.then(move |request| {
        let (api, pace) = (api.clone(), pace.clone());
        async move {
            pace.lock().await.wait().await;
            let request = request?;
            api.lease_renew(request.id).await
        }
    });
    // The first error ends the stream after it is sent.
    let mut failed = false;
    renewals.take_while(move |reply| {
        if failed {
            return false;
        }
        failed = reply.is_err();
        true
    })
}
