#!/usr/bin/env python3
"""Golden KPL aggregation vectors for kinsumer's de-aggregation tests.

Made with the reference aggregator, the `aws_kinesis_agg` package on PyPI (it writes the
same format as the Kinesis Producer Library). To regenerate:

    python3 -m venv /tmp/agg && /tmp/agg/bin/pip install aws_kinesis_agg==1.2.3 six
    /tmp/agg/bin/python tests/data/kpl/make_vectors.py

For each vector NAME it writes NAME.bin (the Kinesis record's data, exactly as the
aggregator produced it) and NAME.tsv: one line per user record, in order, with the
partition key, the explicit hash key (`-` when the record has none), the data length and
the MD5 of the data in hex.
"""

import hashlib
import os

from aws_kinesis_agg.aggregator import RecordAggregator

HERE = os.path.dirname(os.path.abspath(__file__))


def write(name, agg_record, user_records):
    _pk, _ehk, data = agg_record.get_contents()
    assert agg_record.get_num_user_records() == len(user_records), name
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(data)
    with open(os.path.join(HERE, name + ".tsv"), "w") as f:
        for pk, ehk, payload in user_records:
            f.write("%s\t%s\t%d\t%s\n" % (pk, ehk or "-", len(payload), hashlib.md5(payload).hexdigest()))


def build(name, user_records):
    agg = RecordAggregator()
    for pk, ehk, payload in user_records:
        assert agg.add_user_record(pk, payload, ehk) is None, name
    write(name, agg.clear_and_get(), user_records)


def main():
    build("single", [("pk-0", None, b"hello, aggregated world")])
    build(
        "many",
        [("key-%d" % (i % 3), None, ("record %d " % i).encode() * (i % 5)) for i in range(50)],
    )
    build(
        "explicit_hash_keys",
        [
            ("a", "340282366920938463463374607431768211455", b"max hash key"),
            ("b", None, b"no hash key"),
            ("a", "0", b"zero hash key"),
            ("c", "340282366920938463463374607431768211455", b"shared hash key entry"),
            ("\u00e9t\u00e9", None, "utf-8 \u2713".encode()),
        ],
    )
    # Fill one aggregate to the 1 MiB limit: the aggregator hands it back when the next
    # user record no longer fits.
    agg = RecordAggregator()
    records = []
    i = 0
    while True:
        payload = bytes((i * 7 + j) % 251 for j in range(10_000))
        full = agg.add_user_record("big-%d" % (i % 10), payload, None)
        if full is not None:
            assert full.get_size_bytes() <= 1024 * 1024
            write("max_size", full, records)
            break
        records.append(("big-%d" % (i % 10), None, payload))
        i += 1


if __name__ == "__main__":
    main()
