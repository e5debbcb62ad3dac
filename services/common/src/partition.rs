//! Which partition a grid's records belong to: Kafka's default partitioner for keyed records
//! (murmur2 of the key, made positive, modulo the partition count), as the Java clients and
//! librdkafka's `murmur2_random` compute it. The router uses it to notice records that a
//! client with another partitioner (librdkafka's default CRC32, or no key) put elsewhere.

/// The partition of `grid_id` among `partitions` (at least 1).
pub fn grid_partition(grid_id: &str, partitions: usize) -> i32 {
    let positive = (murmur2(grid_id.as_bytes()) & 0x7fff_ffff) as u32;
    let n = u32::try_from(partitions.max(1)).unwrap_or(u32::MAX);
    i32::try_from(positive % n).unwrap_or(0)
}

/// Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(first) = tail.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_own_test_vectors() {
        // From Apache Kafka's UtilsTest.testMurmur2.
        let cases: [(&str, i32); 7] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
            ("", 275_646_681),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn grid_partition_is_stable_and_in_range() {
        for n in 1..12 {
            let p = grid_partition("grid-0042", n);
            assert!((0..n as i32).contains(&p));
            assert_eq!(p, grid_partition("grid-0042", n));
        }
    }
}
