//! `del`: removes one key or a range of keys.

use super::{Context, emit};
use crate::cli::DelArgs;
use crate::requests;

pub async fn run(context: &Context, args: &DelArgs) -> anyhow::Result<()> {
    let (request, warn_range) = requests::delete_request(args)?;
    if warn_range {
        eprintln!("{}", requests::RANGE_DELETE_WARNING);
    }
    let printer = context.printer()?;
    let client = context.connect().await?;
    let response = client.call(client.kv().delete_range(request)).await?;
    emit(printer.del(&response)?)
}
