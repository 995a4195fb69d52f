//! `member list`: the cluster's members.

use synod_api::etcdserverpb::MemberListRequest;

use super::{Context, emit};

pub async fn list(context: &Context) -> anyhow::Result<()> {
    let printer = context.printer()?;
    let client = context.connect().await?;
    // clientv3 3.5 asks for a linearizable list.
    let response =
        client.call(client.cluster().member_list(MemberListRequest { linearizable: true })).await?;
    emit(printer.member_list(&response)?)
}
