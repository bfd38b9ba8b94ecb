//! KPL aggregated records: recognising and unpacking them.
//!
//! The Kinesis Producer Library (and the aggregation libraries for other languages) packs
//! many user records into one Kinesis record: the 4-byte magic `F3 89 9A C2`, a protobuf
//! `AggregatedRecord` (a partition-key table, an explicit-hash-key table and the user
//! records, each naming its keys by index), then the 16-byte MD5 of the protobuf bytes.
//! [`deaggregate`] turns such a record's data into its user records, or says why it cannot;
//! it is pure and never panics, whatever the input.

use md5::{Digest, Md5};
use prost::Message;

/// The first four bytes of every aggregated record.
const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the MD5 trailer.
const DIGEST_LEN: usize = 16;

/// The protobuf body (`messages.proto` of the KPL; tags and field types as there).
#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<PackedRecord>,
}

/// One user record inside the body. Its tags (field 4) are not delivered, so they are
/// skipped as unknown fields rather than decoded.
#[derive(Clone, PartialEq, Message)]
struct PackedRecord {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
}

/// A user record unpacked from an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRecord {
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) data: Vec<u8>,
}

/// Why data that starts with the magic bytes is not a usable aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Corruption {
    /// Too short to hold the magic, a body and the digest.
    Truncated,
    /// The MD5 trailer does not match the body.
    DigestMismatch,
    /// The body is not a valid `AggregatedRecord`.
    Protobuf(String),
    /// A user record names a key beyond its table.
    KeyIndexOutOfRange,
    /// The aggregate holds no user record (producers never write one).
    Empty,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::Truncated => f.write_str("too short"),
            Corruption::DigestMismatch => f.write_str("MD5 digest does not match"),
            Corruption::Protobuf(e) => write!(f, "invalid protobuf ({e})"),
            Corruption::KeyIndexOutOfRange => f.write_str("key index out of range"),
            Corruption::Empty => f.write_str("no user records"),
        }
    }
}

/// Whether `data` claims to be an aggregate (starts with the magic bytes).
pub(crate) fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// The user records of an aggregate, in order; `Err` if `data` starts with the magic
/// bytes but is not a valid aggregate. Call only when [`is_aggregated`] is true.
pub(crate) fn deaggregate(data: &[u8]) -> Result<Vec<UserRecord>, Corruption> {
    let Some(rest) = data.strip_prefix(&MAGIC) else {
        return Err(Corruption::Truncated);
    };
    if rest.len() < DIGEST_LEN {
        return Err(Corruption::Truncated);
    }
    let (body, digest) = rest.split_at(rest.len() - DIGEST_LEN);
    if Md5::digest(body).as_slice() != digest {
        return Err(Corruption::DigestMismatch);
    }
    let agg = AggregatedRecord::decode(body).map_err(|e| Corruption::Protobuf(e.to_string()))?;
    if agg.records.is_empty() {
        return Err(Corruption::Empty);
    }
    let key = |table: &[String], index: u64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| table.get(i))
            .cloned()
            .ok_or(Corruption::KeyIndexOutOfRange)
    };
    agg.records
        .into_iter()
        .map(|r| {
            Ok(UserRecord {
                partition_key: key(&agg.partition_key_table, r.partition_key_index)?,
                explicit_hash_key: r
                    .explicit_hash_key_index
                    .map(|i| key(&agg.explicit_hash_key_table, i))
                    .transpose()?,
                data: r.data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An aggregate of `records` as (partition key index, explicit hash key index, data).
    fn aggregate(pks: &[&str], ehks: &[&str], records: &[(u64, Option<u64>, &[u8])]) -> Vec<u8> {
        let body = AggregatedRecord {
            partition_key_table: pks.iter().map(|s| (*s).to_owned()).collect(),
            explicit_hash_key_table: ehks.iter().map(|s| (*s).to_owned()).collect(),
            records: records
                .iter()
                .map(|(p, e, d)| PackedRecord {
                    partition_key_index: *p,
                    explicit_hash_key_index: *e,
                    data: d.to_vec(),
                })
                .collect(),
        }
        .encode_to_vec();
        seal(&body)
    }

    fn seal(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        out
    }

    #[test]
    fn unpacks_keys_and_data_in_order() {
        let data = aggregate(
            &["a", "b"],
            &["42"],
            &[(0, None, b"one"), (1, Some(0), b"two"), (0, None, b"")],
        );
        assert!(is_aggregated(&data));
        let records = deaggregate(&data).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].partition_key, "a");
        assert_eq!(records[0].explicit_hash_key, None);
        assert_eq!(records[0].data, b"one");
        assert_eq!(records[1].partition_key, "b");
        assert_eq!(records[1].explicit_hash_key.as_deref(), Some("42"));
        assert_eq!(records[2].data, b"");
    }

    #[test]
    fn plain_data_is_not_an_aggregate() {
        assert!(!is_aggregated(b"hello"));
        assert!(!is_aggregated(&MAGIC[..3]));
    }

    #[test]
    fn corruption_is_named() {
        let good = aggregate(&["a"], &[], &[(0, None, b"x")]);
        assert_eq!(deaggregate(&MAGIC), Err(Corruption::Truncated));
        assert_eq!(
            deaggregate(&good[..good.len() - 1]),
            Err(Corruption::DigestMismatch)
        );
        let mut flipped = good.clone();
        flipped[6] ^= 0x40;
        assert_eq!(deaggregate(&flipped), Err(Corruption::DigestMismatch));
        assert_eq!(
            deaggregate(&aggregate(&["a"], &[], &[(1, None, b"x")])),
            Err(Corruption::KeyIndexOutOfRange)
        );
        assert_eq!(
            deaggregate(&aggregate(&["a"], &[], &[(0, Some(0), b"x")])),
            Err(Corruption::KeyIndexOutOfRange)
        );
        assert_eq!(
            deaggregate(&aggregate(&["a"], &[], &[])),
            Err(Corruption::Empty)
        );
        // A valid digest over bytes that are not protobuf.
        assert!(matches!(
            deaggregate(&seal(&[0x1a, 0xff, 0xff, 0xff])),
            Err(Corruption::Protobuf(_))
        ));
    }

    /// xorshift64*: a deterministic source of test inputs, no RNG crate needed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Checks an outcome's invariants: decoded keys come from the tables, nothing panics.
    fn check(data: &[u8]) {
        if let Ok(records) = deaggregate(data) {
            assert!(!records.is_empty());
        }
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let seed = aggregate(
            &["alpha", "beta", "gamma"],
            &["1", "2"],
            &[
                (0, None, b"first"),
                (1, Some(1), b"second record"),
                (2, Some(0), &[0u8; 300]),
                (0, None, b""),
            ],
        );
        let body = &seed[MAGIC.len()..seed.len() - DIGEST_LEN];
        let (mut decoded, mut rejected) = (0, 0);
        for round in 0..20_000 {
            let input = match round % 4 {
                // Random bytes behind the magic, with a correct digest: exercises the
                // protobuf parser rather than stopping at the MD5 check.
                0 => {
                    let len = rng.below(200);
                    let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    seal(&junk)
                }
                // The valid body with a few bytes flipped, inserted or removed, resealed.
                1 | 2 => {
                    let mut b = body.to_vec();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(b.len());
                        match rng.below(3) {
                            0 => b[at] ^= 1 << rng.below(8),
                            1 => b.insert(at, rng.next() as u8),
                            _ => {
                                b.remove(at);
                            }
                        }
                    }
                    seal(&b)
                }
                // The whole record truncated or mutated without resealing.
                _ => {
                    let mut b = seed[..rng.below(seed.len() + 1)].to_vec();
                    if !b.is_empty() {
                        let at = rng.below(b.len());
                        b[at] ^= rng.next() as u8;
                    }
                    b
                }
            };
            check(&input);
            if deaggregate(&input).is_ok() {
                decoded += 1;
            } else {
                rejected += 1;
            }
        }
        // Both outcomes were exercised.
        assert!(decoded > 100, "decoded {decoded}");
        assert!(rejected > 100, "rejected {rejected}");
    }
}

/// The vectors in `tests/data/kpl/`, made by the reference aggregator (`aws_kinesis_agg`).
#[cfg(test)]
mod golden {
    use super::*;
    use std::path::PathBuf;

    fn check(name: &str) -> usize {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kpl");
        let data = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let expected = std::fs::read_to_string(dir.join(format!("{name}.tsv"))).unwrap();
        assert!(is_aggregated(&data), "{name}");
        let records = deaggregate(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let lines: Vec<&str> = expected.lines().collect();
        assert_eq!(records.len(), lines.len(), "{name}");
        for (i, (record, line)) in records.iter().zip(&lines).enumerate() {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(record.partition_key, f[0], "{name} record {i}");
            let ehk = (f[1] != "-").then_some(f[1]);
            assert_eq!(
                record.explicit_hash_key.as_deref(),
                ehk,
                "{name} record {i}"
            );
            assert_eq!(record.data.len().to_string(), f[2], "{name} record {i}");
            let md5: String = Md5::digest(&record.data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(md5, f[3], "{name} record {i}");
        }
        records.len()
    }

    #[test]
    fn one_user_record() {
        assert_eq!(check("single"), 1);
    }

    #[test]
    fn many_user_records_with_shared_keys() {
        assert_eq!(check("many"), 50);
    }

    #[test]
    fn explicit_hash_keys() {
        assert_eq!(check("explicit_hash_keys"), 5);
    }

    #[test]
    fn an_aggregate_at_the_size_limit() {
        assert_eq!(check("max_size"), 104);
    }
}
