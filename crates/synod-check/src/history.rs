//! What a client asked ([`Call`]), what it was told ([`Outcome`]), and when ([`Op`]).
//!
//! A history is written as JSON lines, one [`Op`] per line, so a run can be checked again
//! (and looked at) after the fact.

use std::io::{BufRead, BufWriter, Read, Write};

use serde::{Deserialize, Serialize};

use crate::limits;

/// One request a client made. Values written are unique in a history (the harnesses make
/// them from the client and a sequence number), so a read names the write it saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// A linearizable read of one key.
    Get { key: String },
    /// An unconditional write.
    Put { key: String, value: String },
    /// A delete of one key.
    Delete { key: String },
    /// A Txn: if the key holds `expect` (`None`: the key does not exist), put `value`.
    Cas { key: String, expect: Option<String>, value: String },
    /// A counter add: the counter (0 when absent) grows by `delta`.
    Add { key: String, delta: i64 },
    /// A linearizable read of a counter.
    ReadCounter { key: String },
    /// Takes the lock for `owner`; the reply carries its fencing token.
    Acquire { lock: String, owner: String },
    /// Gives back the lock `owner` holds with `token`.
    Release { lock: String, owner: String, token: i64 },
}

impl Call {
    /// The object the call is on: histories are checked one object at a time.
    pub fn object(&self) -> &str {
        match self {
            Call::Get { key }
            | Call::Put { key, .. }
            | Call::Delete { key }
            | Call::Cas { key, .. }
            | Call::Add { key, .. }
            | Call::ReadCounter { key } => key,
            Call::Acquire { lock, .. } | Call::Release { lock, .. } => lock,
        }
    }

    /// What an answered call revealed about its register's value: `Some(value)`, with
    /// `None` for an absent key, or `None` when it revealed nothing (a failed compare-and-set,
    /// or a call on a counter or lock). The workloads pick compare-and-set expectations
    /// from it.
    pub fn revealed(&self, reply: &Reply) -> Option<Option<String>> {
        match (self, reply) {
            (Call::Get { .. }, Reply::Get { value }) => Some(value.clone()),
            (Call::Put { value, .. }, Reply::Put) => Some(Some(value.clone())),
            (Call::Cas { value, .. }, Reply::Cas { succeeded: true }) => Some(Some(value.clone())),
            (Call::Delete { .. }, Reply::Delete { .. }) => Some(None),
            _ => None,
        }
    }

    /// Whether the call only reads: a read whose outcome is unknown is left out of a check.
    pub fn is_read(&self) -> bool {
        matches!(self, Call::Get { .. } | Call::ReadCounter { .. })
    }
}

/// What a client was told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Get { value: Option<String> },
    Put,
    Delete { deleted: bool },
    Cas { succeeded: bool },
    Add { value: i64 },
    ReadCounter { value: i64 },
    Acquire { token: i64 },
    Release { released: bool },
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// A reply: the call took effect as the reply says.
    Ok {
        #[serde(flatten)]
        reply: Reply,
        /// The store revision in the reply's header, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<i64>,
    },
    /// The store proved the call did not take effect (it refused it before proposing).
    Fail { error: String },
    /// No answer (a timeout, a lost connection, an unavailable member): the call may take
    /// effect at any time after it was made, or never.
    Unknown { error: String },
}

/// One call, its outcome, and when it was made and answered, in nanoseconds from the start
/// of the run on one clock. Each client makes one call at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    /// The member the client sent the call to, for the picture of a violation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub member: String,
    pub call_ns: u64,
    /// When the answer came, or when the client gave up on an unknown outcome.
    pub return_ns: u64,
    #[serde(flatten)]
    pub call: Call,
    pub outcome: Outcome,
}

/// Reads a history written by [`write_jsonl`]: one [`Op`] per line, blank lines skipped.
/// An error names the line (counting from 1) and what is wrong with it.
pub fn read_jsonl(reader: impl BufRead) -> Result<Vec<Op>, String> {
    let mut reader = reader;
    let mut history = Vec::new();
    let mut line = String::new();
    for number in 1u64.. {
        line.clear();
        let bytes = reader
            .by_ref()
            .take(limits::HISTORY_LINE_BYTES_MAX + 1)
            .read_line(&mut line)
            .map_err(|e| format!("line {number}: {e}"))?;
        if bytes == 0 {
            break;
        }
        if bytes as u64 > limits::HISTORY_LINE_BYTES_MAX {
            return Err(format!("line {number}: longer than {} bytes", limits::HISTORY_LINE_BYTES_MAX));
        }
        if line.trim().is_empty() {
            continue;
        }
        if history.len() == limits::HISTORY_OPS_MAX {
            return Err(format!("line {number}: more than {} ops", limits::HISTORY_OPS_MAX));
        }
        history.push(serde_json::from_str(&line).map_err(|e| format!("line {number}: {e}"))?);
    }
    Ok(history)
}

/// Writes `history` as JSON lines, one [`Op`] per line.
pub fn write_jsonl(writer: impl Write, history: &[Op]) -> std::io::Result<()> {
    let mut writer = BufWriter::new(writer);
    for op in history {
        serde_json::to_writer(&mut writer, op)?;
        writer.write_all(b"\n")?;
    }
    writer.flush()
}
