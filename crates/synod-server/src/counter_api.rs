//! synod's Counter service (`synod.v1.Counter`): native, linearizable adds to a key whose
//! value is a decimal integer, exactly once under retries within a session. The adds are
//! replicated commands; the leader folds concurrent adds to one key into one entry
//! (`synod_consensus`'s combiner), and the state machine gives each its own running value.

use synod_api::EtcdError;
use synod_api::etcdserverpb::RangeRequest;
use synod_api::synod::v1::{AddRequest, AddResponse, GetRequest, GetResponse, counter_server};
use synod_api::synodpb::{Command, CounterAdd, CounterOp, command};
use synod_base::limits;
use synod_mvcc::{Response, counter};
use tonic::{Request, Status};

use crate::api::{Api, Reply, ServedByLearner};
use crate::errors;

impl Api {
    pub async fn counter_add(&self, request: AddRequest) -> Result<AddResponse, Status> {
        if request.key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        if request.session != 0 && request.sequence == 0 {
            return Err(EtcdError::CounterNoSequence.into());
        }
        // A counter's value is at most 20 digits: it costs what a put of that size does.
        self.check_quota(limits::QUOTA_KV_OVERHEAD_BYTES + request.key.len() as u64 + 20).await?;
        let op = CounterOp {
            session: request.session,
            sequence: request.sequence,
            delta: request.delta,
            answered_below: request.answered_below,
            user: crate::auth::admitted().ok().flatten().map(|a| a.user).unwrap_or_default(),
        };
        let add = CounterAdd { key: request.key, ops: vec![op] };
        match self.propose(Command { op: Some(command::Op::CounterAdd(add)), ..Default::default() }).await? {
            Response::CounterAdd(results) => match results.as_slice() {
                [Ok(result)] => {
                    Ok(AddResponse { header: Some(self.header(result.revision)), value: result.value })
                }
                [Err(e)] => Err((*e).into()),
                _ => Err(errors::unexpected("counter add")),
            },
            _ => Err(errors::unexpected("counter add")),
        }
    }

    pub async fn counter_get(&self, request: GetRequest) -> Result<GetResponse, Status> {
        if request.key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        let range =
            RangeRequest { key: request.key, serializable: request.serializable, ..Default::default() };
        let response = self.range(range).await?;
        let (value, exists) = match response.kvs.first() {
            None => (0, false),
            Some(kv) => (counter::parse(&kv.value).ok_or(EtcdError::CounterNotNumber)?, true),
        };
        Ok(GetResponse { header: response.header, value, exists })
    }
}

impl ServedByLearner for AddRequest {}

impl ServedByLearner for GetRequest {
    fn served_by_learner(&self) -> bool {
        self.serializable
    }
}

#[tonic::async_trait]
impl counter_server::Counter for Api {
    async fn add(&self, request: Request<AddRequest>) -> Reply<AddResponse> {
        self.unary(request, |r| Api::counter_add(self, r)).await
    }

    async fn get(&self, request: Request<GetRequest>) -> Reply<GetResponse> {
        self.unary(request, |r| Api::counter_get(self, r)).await
    }
}
