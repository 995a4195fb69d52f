//! `txn`: reads comparisons, success requests and failure requests from stdin, each list
//! ended by an empty line, and commits them as one transaction.
//!
//! With `-i` the prompts go to stdout before each list, as etcdctl prints them. As in
//! etcdctl, the commit has no command timeout, and input that ends before a list's empty
//! line fails with `Error: EOF` (exit status 3).

use std::io::{BufRead, Read, Write};

use synod_api::etcdserverpb::{Compare, RequestOp, TxnRequest};

use super::{Context, emit};
use crate::cli::TxnArgs;
use crate::client::request_error;
use crate::exit::{CtlError, CtlResult};
use crate::limits::{STDIN_BYTES_MAX, TXN_LINES_MAX};
use crate::requests::RANGE_DELETE_WARNING;
use crate::txn_parser;

pub async fn run(context: &Context, args: &TxnArgs) -> anyhow::Result<()> {
    if !args.args.is_empty() {
        return Err(CtlError::bad_args("txn command does not accept argument").into());
    }
    let printer = context.printer()?;
    // Input past the cap reads as its end: the unfinished list then fails with EOF.
    let mut input = std::io::stdin().lock().take(STDIN_BYTES_MAX);
    let prompt = |text: &str| -> anyhow::Result<()> {
        if args.interactive {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{text}")?;
            stdout.flush()?;
        }
        Ok(())
    };
    prompt("compares:")?;
    let compare = read_compares(&mut input)?;
    prompt("success requests (get, put, del):")?;
    let success = read_ops(&mut input)?;
    prompt("failure requests (get, put, del):")?;
    let failure = read_ops(&mut input)?;

    let client = context.connect().await?;
    let request = TxnRequest { compare, success, failure };
    let response = client
        .kv()
        .txn(request)
        .await
        .map_err(|status| CtlError::request(request_error(&status)))?
        .into_inner();
    emit(printer.txn(&response)?)
}

/// The next line without its surrounding spaces; `None` for the empty line that ends a list.
fn next_line(input: &mut impl BufRead) -> CtlResult<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let read = input.read_until(b'\n', &mut line).map_err(|e| CtlError::invalid_input(e.to_string()))?;
    if read == 0 || line.last() != Some(&b'\n') {
        // Go's ReadString reports EOF for a last line without its newline, too.
        return Err(CtlError::invalid_input("EOF"));
    }
    let trimmed = trim(&line);
    Ok((!trimmed.is_empty()).then(|| trimmed.to_vec()))
}

/// Go's `strings.TrimSpace` (Unicode spaces when the line is UTF-8, ASCII ones otherwise).
fn trim(line: &[u8]) -> &[u8] {
    match std::str::from_utf8(line) {
        Ok(text) => text.trim().as_bytes(),
        Err(_) => line.trim_ascii(),
    }
}

fn read_compares(input: &mut impl BufRead) -> CtlResult<Vec<Compare>> {
    let mut compares = Vec::new();
    while let Some(line) = next_line(input)? {
        if compares.len() == TXN_LINES_MAX {
            return Err(CtlError::invalid_input(format!("too many comparisons (at most {TXN_LINES_MAX})")));
        }
        compares.push(txn_parser::parse_compare(&line).map_err(CtlError::invalid_input)?);
    }
    Ok(compares)
}

fn read_ops(input: &mut impl BufRead) -> CtlResult<Vec<RequestOp>> {
    let mut ops = Vec::new();
    while let Some(line) = next_line(input)? {
        if ops.len() == TXN_LINES_MAX {
            return Err(CtlError::invalid_input(format!("too many requests (at most {TXN_LINES_MAX})")));
        }
        let (op, warn_range) = txn_parser::parse_request_op(&line)?;
        if warn_range {
            eprintln!("{RANGE_DELETE_WARNING}");
        }
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists end at an empty (or all-space) line; input that stops early is an EOF error.
    #[test]
    fn sections() {
        let mut input: &[u8] = b"mod(\"k\") > \"0\"\n  \nput k v\n\nget k\n\n";
        assert_eq!(read_compares(&mut input).unwrap().len(), 1);
        assert_eq!(read_ops(&mut input).unwrap().len(), 1);
        assert_eq!(read_ops(&mut input).unwrap().len(), 1);
        let error = read_ops(&mut input).unwrap_err();
        assert_eq!((error.code, error.to_string()), (crate::exit::ExitCode::InvalidInput, "EOF".to_string()));
        let mut unterminated: &[u8] = b"put k v";
        assert_eq!(read_ops(&mut unterminated).unwrap_err().to_string(), "EOF");
    }
}
