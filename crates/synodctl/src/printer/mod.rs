//! Output: etcdctl 3.5's `--write-out` formats, byte for byte.
//!
//! Each format lives in its own module, written from etcdctl's printers: [`simple`]
//! (`printer_simple.go`), [`json`] (Go's `encoding/json` of the response structs),
//! [`fields`] (`printer_fields.go`), [`table`] (the tablewriter library etcdctl uses) and
//! protobuf (the response's wire bytes). A format that etcdctl does not offer for a command
//! fails as etcdctl does: `Error: table not supported as output format`, exit status 4,
//! after the request has been made.
//!
//! Printers write into a buffer that the command then writes to stdout, so that a command
//! prints nothing at all when it fails halfway.

mod fields;
mod json;
pub mod rows;
pub mod simple;
pub mod table;

use prost::Message;
use synod_api::etcdserverpb::{
    AlarmResponse, AuthRoleGetResponse, AuthRoleListResponse, AuthStatusResponse, AuthUserGetResponse,
    AuthUserListResponse, DeleteRangeResponse, HashKvResponse, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, MemberListResponse, PutResponse,
    RangeResponse, ResponseHeader, StatusResponse, TxnResponse, WatchResponse,
};

use crate::exit::{CtlError, CtlResult};

/// An `--write-out` format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
    Table,
    Fields,
    Protobuf,
}

impl Format {
    /// The format named by `--write-out`; etcdctl refuses other names with exit status 4.
    pub fn parse(name: &str) -> CtlResult<Format> {
        match name {
            "simple" => Ok(Format::Simple),
            "json" => Ok(Format::Json),
            "table" => Ok(Format::Table),
            "fields" => Ok(Format::Fields),
            "protobuf" => Ok(Format::Protobuf),
            _ => Err(CtlError::bad_feature("unsupported output format")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Table => "table",
            Format::Fields => "fields",
            Format::Protobuf => "protobuf",
        }
    }

    fn unsupported(self) -> CtlError {
        CtlError::bad_feature(format!("{} not supported as output format", self.name()))
    }
}

/// The result of `endpoint health` for one endpoint (etcdctl's `epHealth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHealth {
    pub endpoint: String,
    pub health: bool,
    /// How long the health read took, in Go's duration format.
    pub took: String,
    /// Empty when healthy.
    pub error: String,
}

/// The result of `endpoint status` for one endpoint (etcdctl's `epStatus`).
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub status: StatusResponse,
}

/// The result of `endpoint hashkv` for one endpoint (etcdctl's `epHashKV`).
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointHash {
    pub endpoint: String,
    pub hash: HashKvResponse,
}

/// A reply etcdctl prints through its generic RPC printer (`printerRPC`): as JSON, Go's
/// marshalling of the struct etcdctl holds; as protobuf, that struct's `Marshal`; as
/// fields, what `printer_fields.go` lists, where it lists anything. No table is offered.
///
/// The lease replies are clientv3's structs, not the wire messages: their header is
/// embedded, so JSON has its fields at the top level, and `Marshal` is the embedded
/// header's, so the protobuf format prints the header alone.
#[derive(Clone, Copy, Debug)]
pub enum Reply<'a> {
    LeaseGrant(&'a LeaseGrantResponse),
    LeaseKeepAlive(&'a LeaseKeepAliveResponse),
    LeaseTimeToLive(&'a LeaseTimeToLiveResponse),
    LeaseList(&'a LeaseLeasesResponse),
    /// A reply that is its header alone: the auth changes.
    Header(&'a Option<ResponseHeader>),
    /// `lease revoke`'s reply, a header alone, which etcdctl cannot print as protobuf (it
    /// hands the printer a value without a `Marshal` method).
    LeaseRevoke(&'a Option<ResponseHeader>),
    /// `move-leader`'s reply, a header alone, which the fields format does not offer.
    MoveLeader(&'a Option<ResponseHeader>),
    Alarm(&'a AlarmResponse),
    UserGet(&'a AuthUserGetResponse),
    UserList(&'a AuthUserListResponse),
    RoleGet(&'a AuthRoleGetResponse),
    RoleList(&'a AuthRoleListResponse),
    AuthStatus(&'a AuthStatusResponse),
    /// One watch response, as clientv3 hands it over: without the watch id.
    Watch(&'a WatchResponse),
}

impl Reply<'_> {
    /// What etcdctl's protobuf printer writes for the reply.
    fn protobuf(self) -> CtlResult<Vec<u8>> {
        let header_alone =
            |header: &Option<ResponseHeader>| LeaseRevokeResponse { header: *header }.encode_to_vec();
        let embedded = |header: &Option<ResponseHeader>| header.unwrap_or_default().encode_to_vec();
        Ok(match self {
            Reply::LeaseRevoke(header) => {
                // Go's `%v` of the struct: its header in protobuf's text format.
                let text = match header {
                    Some(h) => [
                        ("cluster_id", h.cluster_id.to_string()),
                        ("member_id", h.member_id.to_string()),
                        ("revision", h.revision.to_string()),
                        ("raft_term", h.raft_term.to_string()),
                    ]
                    .iter()
                    .filter(|(_, value)| value != "0")
                    .map(|(name, value)| format!("{name}:{value} "))
                    .collect(),
                    None => "<nil>".to_string(),
                };
                return Err(CtlError::bad_feature(format!(
                    "marshal unsupported for type clientv3.LeaseRevokeResponse ({{{text}}})"
                )));
            }
            Reply::LeaseGrant(r) => embedded(&r.header),
            Reply::LeaseKeepAlive(r) => embedded(&r.header),
            Reply::LeaseTimeToLive(r) => embedded(&r.header),
            Reply::LeaseList(r) => embedded(&r.header),
            Reply::Header(header) | Reply::MoveLeader(header) => header_alone(header),
            Reply::Alarm(r) => r.encode_to_vec(),
            Reply::UserGet(r) => r.encode_to_vec(),
            Reply::UserList(r) => r.encode_to_vec(),
            Reply::RoleGet(r) => r.encode_to_vec(),
            Reply::RoleList(r) => r.encode_to_vec(),
            Reply::AuthStatus(r) => r.encode_to_vec(),
            Reply::Watch(r) => WatchResponse {
                header: r.header,
                events: r.events.clone(),
                compact_revision: r.compact_revision,
                canceled: r.canceled,
                created: r.created,
                ..Default::default()
            }
            .encode_to_vec(),
        })
    }
}

/// Prints responses in one format. `hex` is etcdctl's `--hex`: keys and values as `\xNN`
/// in the simple format, member ids as hex strings in JSON.
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    pub format: Format,
    pub hex: bool,
}

/// What a printer produced: bytes for stdout and for stderr (the simple format reports
/// unhealthy endpoints on stderr).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl From<Vec<u8>> for Output {
    fn from(stdout: Vec<u8>) -> Output {
        Output { stdout, stderr: Vec::new() }
    }
}

impl Printer {
    pub fn new(format: Format, hex: bool) -> Printer {
        Printer { format, hex }
    }

    /// `get`; `value_only` is `--print-value-only`.
    pub fn get(&self, response: &RangeResponse, value_only: bool) -> CtlResult<Output> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple::get(&mut out, response, self.hex, value_only),
            Format::Json => json::get(&mut out, response),
            Format::Fields => fields::get(&mut out, response),
            Format::Protobuf => out = response.encode_to_vec(),
            Format::Table => return Err(self.format.unsupported()),
        }
        Ok(out.into())
    }

    pub fn put(&self, response: &PutResponse) -> CtlResult<Output> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple::put(&mut out, response, self.hex),
            Format::Json => json::put(&mut out, response),
            Format::Fields => fields::put(&mut out, response),
            Format::Protobuf => out = response.encode_to_vec(),
            Format::Table => return Err(self.format.unsupported()),
        }
        Ok(out.into())
    }

    pub fn del(&self, response: &DeleteRangeResponse) -> CtlResult<Output> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple::del(&mut out, response, self.hex),
            Format::Json => json::del(&mut out, response),
            Format::Fields => fields::del(&mut out, response),
            Format::Protobuf => out = response.encode_to_vec(),
            Format::Table => return Err(self.format.unsupported()),
        }
        Ok(out.into())
    }

    pub fn txn(&self, response: &TxnResponse) -> CtlResult<Output> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple::txn(&mut out, response, self.hex),
            Format::Json => json::txn(&mut out, response),
            Format::Fields => fields::txn(&mut out, response),
            Format::Protobuf => out = response.encode_to_vec(),
            Format::Table => return Err(self.format.unsupported()),
        }
        Ok(out.into())
    }

    pub fn member_list(&self, response: &MemberListResponse) -> CtlResult<Output> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple::lines(&mut out, &rows::member_list(response)),
            Format::Json if self.hex => json::member_list_hex(&mut out, response),
            Format::Json => json::member_list(&mut out, response),
            Format::Fields => fields::member_list(&mut out, response),
            Format::Protobuf => out = response.encode_to_vec(),
            Format::Table => table::render(&mut out, rows::MEMBER_LIST_HEADER, &rows::member_list(response)),
        }
        Ok(out.into())
    }

    pub fn endpoint_health(&self, health: &[EndpointHealth]) -> CtlResult<Output> {
        let mut out = Output::default();
        match self.format {
            Format::Simple => simple::endpoint_health(&mut out, health),
            Format::Json => json::endpoint_health(&mut out.stdout, health),
            Format::Fields => fields::endpoint_health(&mut out.stdout, health),
            Format::Table => {
                table::render(&mut out.stdout, rows::ENDPOINT_HEALTH_HEADER, &rows::endpoint_health(health))
            }
            Format::Protobuf => return Err(self.format.unsupported()),
        }
        Ok(out)
    }

    /// A [`Reply`]; `simple` writes etcdctl's simple format of it, which often needs more
    /// than the reply (the name of the user added, the lease revoked).
    pub fn reply(&self, reply: Reply<'_>, simple: impl FnOnce(&mut Vec<u8>)) -> CtlResult<Output> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple(&mut out),
            Format::Json => json::reply(&mut out, reply),
            Format::Fields => {
                if !fields::reply(&mut out, reply) {
                    return Err(self.format.unsupported());
                }
            }
            Format::Protobuf => out = reply.protobuf()?,
            Format::Table => return Err(self.format.unsupported()),
        }
        Ok(out.into())
    }

    pub fn endpoint_hashkv(&self, hashes: &[EndpointHash]) -> CtlResult<Output> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple::lines(&mut out, &rows::endpoint_hashkv(hashes)),
            Format::Json => json::endpoint_hashkv(&mut out, hashes),
            Format::Fields => fields::endpoint_hashkv(&mut out, hashes),
            Format::Table => {
                table::render(&mut out, rows::ENDPOINT_HASHKV_HEADER, &rows::endpoint_hashkv(hashes))
            }
            Format::Protobuf => return Err(self.format.unsupported()),
        }
        Ok(out.into())
    }

    pub fn endpoint_status(&self, statuses: &[EndpointStatus]) -> CtlResult<Output> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple::lines(&mut out, &rows::endpoint_status(statuses)),
            Format::Json => json::endpoint_status(&mut out, statuses),
            Format::Fields => fields::endpoint_status(&mut out, statuses),
            Format::Table => {
                table::render(&mut out, rows::ENDPOINT_STATUS_HEADER, &rows::endpoint_status(statuses))
            }
            Format::Protobuf => return Err(self.format.unsupported()),
        }
        Ok(out.into())
    }
}
