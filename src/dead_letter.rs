//! Records set aside after their last allowed attempt: [`DeadLetter`], and
//! [`DeadLetterStream`], a handler that publishes them to another Kinesis stream.

use std::fmt;

use crate::bridge::Bridge;
use crate::error::{Error, Result};
use crate::record::Record;

/// The boxed error a [`DeadLetter`] handler returns.
pub type DeadLetterError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Takes the records that failed [`Config::with_max_attempts`](crate::Config::with_max_attempts)
/// times (see [`Record::retry_later`]). Called on the record's shard thread, one record
/// at a time, in shard order; the shard waits meanwhile (per-key order holds) and every
/// other shard goes on. The checkpoint moves past the record only once the handler
/// returns `Ok`: an `Err` (or a panic) is logged and the handler is called again for the
/// same record after a delay that doubles up to 30 s — a record is never lost.
///
/// # Examples
///
/// ```
/// use kinsumer::{DeadLetter, DeadLetterError, Letter};
///
/// #[derive(Debug)]
/// struct LogIt;
///
/// impl DeadLetter for LogIt {
///     fn dead_letter(&self, letter: &Letter<'_>) -> Result<(), DeadLetterError> {
///         eprintln!(
///             "set aside {} of {} after {} attempts: {}",
///             letter.record().sequence_number(),
///             letter.record().shard_id(),
///             letter.attempts(),
///             letter.error()
///         );
///         Ok(())
///     }
/// }
/// let config = kinsumer::Config::default()
///     .with_max_attempts(5)
///     .with_dead_letter(std::sync::Arc::new(LogIt));
/// assert!(config.validate().is_ok());
/// ```
pub trait DeadLetter: Send + Sync + fmt::Debug {
    /// Sets `letter`'s record aside (stores it, publishes it, logs it…); `Ok` once that
    /// is durable.
    ///
    /// # Errors
    ///
    /// Any failure: the same record is offered again later.
    fn dead_letter(&self, letter: &Letter<'_>) -> std::result::Result<(), DeadLetterError>;
}

/// A record set aside, with what is known of its failures; see [`DeadLetter`].
pub struct Letter<'a> {
    pub(crate) record: &'a Record,
    pub(crate) attempts: u32,
    pub(crate) error: &'a str,
    pub(crate) bridge: &'a Bridge,
}

impl Letter<'_> {
    /// The record (its data, keys, shard and sequence numbers).
    pub fn record(&self) -> &Record {
        self.record
    }

    /// How many times it was delivered and failed.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// What the last failure said (the argument of the last
    /// [`retry_later`](Record::retry_later)).
    pub fn error(&self) -> &str {
        self.error
    }

    /// Puts a record into a Kinesis stream through the consumer's own client (as
    /// [`Kinsumer::publish`](crate::Kinsumer::publish)).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoSuchStream`](crate::ErrorKind::NoSuchStream), or an AWS failure.
    pub fn publish(&self, stream: &str, partition_key: &str, data: &[u8]) -> Result<()> {
        crate::stream::publish(self.bridge, stream, partition_key, data)
    }

    /// The record with its metadata as one JSON object: `shard_id`, `sequence_number`,
    /// `sub_sequence_number` (or `null`), `partition_key`, `attempts`, `error`, and
    /// `data` (base64).
    pub fn to_json(&self) -> String {
        let r = self.record;
        format!(
            "{{\"shard_id\":{},\"sequence_number\":{},\"sub_sequence_number\":{},\
             \"partition_key\":{},\"attempts\":{},\"error\":{},\"data\":{}}}",
            json_string(r.shard_id()),
            json_string(r.sequence_number()),
            r.sub_sequence_number()
                .map_or_else(|| "null".to_owned(), |n| n.to_string()),
            json_string(r.partition_key()),
            self.attempts,
            json_string(self.error),
            json_string(&aws_smithy_types::base64::encode(r.data())),
        )
    }
}

impl fmt::Debug for Letter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Letter")
            .field("record", self.record)
            .field("attempts", &self.attempts)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// A JSON string literal of `s`.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A [`DeadLetter`] handler that publishes each record, as [`Letter::to_json`], to
/// another Kinesis stream, with the record's own partition key — what most users would
/// write. The consumer's Kinesis client (and role, if any) needs `kinesis:PutRecord` on
/// that stream.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kinsumer::{Config, DeadLetterStream};
///
/// let config = Config::default()
///     .with_max_attempts(5)
///     .with_dead_letter(Arc::new(DeadLetterStream::new("orders-dead-letters")));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct DeadLetterStream {
    stream: String,
}

impl DeadLetterStream {
    /// Publishes to `stream`.
    pub fn new(stream: impl Into<String>) -> Self {
        DeadLetterStream {
            stream: stream.into(),
        }
    }
}

impl DeadLetter for DeadLetterStream {
    fn dead_letter(&self, letter: &Letter<'_>) -> std::result::Result<(), DeadLetterError> {
        letter
            .publish(
                &self.stream,
                letter.record().partition_key(),
                letter.to_json().as_bytes(),
            )
            .map_err(|e: Error| Box::new(e) as DeadLetterError)
    }
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
