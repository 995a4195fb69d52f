//! `compaction`: discards the history before a revision.

use synod_api::etcdserverpb::CompactionRequest;

use super::Context;
use crate::cli::CompactionArgs;
use crate::exit::CtlError;
use synod_base::go_fmt;

pub async fn run(context: &Context, args: &CompactionArgs) -> anyhow::Result<()> {
    let [revision] = args.args.as_slice() else {
        return Err(CtlError::bad_args("compaction command needs 1 argument").into());
    };
    // etcdctl reports an unparsable revision with exit status 1, not 128.
    let revision = go_fmt::parse_int(revision, 10).map_err(CtlError::request)?;
    context.printer()?;
    let client = context.connect().await?;
    client.call(client.kv().compact(CompactionRequest { revision, physical: args.physical })).await?;
    // etcdctl prints this line whatever the output format.
    println!("compacted revision {revision}");
    Ok(())
}
