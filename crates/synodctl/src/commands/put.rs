//! `put`: writes one key, its value from the arguments or from stdin.

use std::io::Read;

use super::{Context, emit};
use crate::cli::PutArgs;
use crate::limits::STDIN_BYTES_MAX;
use crate::requests;

pub async fn run(context: &Context, args: &PutArgs) -> anyhow::Result<()> {
    let request = requests::put_request(args, || {
        let mut value = Vec::new();
        let mut stdin = std::io::stdin().lock().take(STDIN_BYTES_MAX + 1);
        stdin.read_to_end(&mut value).ok()?;
        // Larger than any member accepts: refuse here rather than send it.
        (value.len() as u64 <= STDIN_BYTES_MAX).then_some(value)
    })?;
    let printer = context.printer()?;
    let client = context.connect().await?;
    let response = client.call(client.kv().put(request)).await?;
    emit(printer.put(&response)?)
}
