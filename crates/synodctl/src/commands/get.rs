//! `get`: one key or a range of keys.

use super::{Context, emit};
use crate::cli::GetArgs;
use crate::exit::CtlError;
use crate::printer::Format;
use crate::requests;

pub async fn run(context: &Context, args: &GetArgs) -> anyhow::Result<()> {
    let request = requests::range_request(args)?;
    let printer = context.printer()?;
    let client = context.connect().await?;
    let response = client.call(client.kv().range(request)).await?;
    // etcdctl checks these only once the reply is in.
    if args.count_only && printer.format != Format::Fields {
        return Err(CtlError::bad_args("--count-only is only for `--write-out=fields`").into());
    }
    if args.print_value_only && printer.format != Format::Simple {
        return Err(CtlError::bad_args("print-value-only is only for `--write-out=simple`").into());
    }
    emit(printer.get(&response, args.print_value_only)?)
}
