//! A deterministic byte mutator, for running the targets on the stable
//! toolchain without libFuzzer: the same seeds give the same inputs on
//! every run, so a failure in CI reproduces locally by its index.

/// xorshift64*: small, fast, and good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (zero is remapped: xorshift sticks at 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Bytes that parsers treat specially: separators of the formats under
/// test, escapes, protobuf wire-type boundaries, and bytes that are never
/// valid UTF-8.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0xC0, 0xE9, b'\n', b' ', b'%', b'/', b'.', b'"', b'\\',
    b'{', b'}', b'[', b']', b':', b',', b'0', b'9', b'A', b'F', b'-', b'e',
];

/// Numbers that sit on limits: lengths and sizes around the integer widths.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e999",
    "2147483647",
    "-2147483648",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "99999999999999999999999",
];

/// Returns `input` changed by one to four mutations; `other` (another seed)
/// is the source for splicing.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(&mut out, other, rng);
    }
    out
}

fn mutate_once(out: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    let len = out.len();
    match rng.below(9) {
        // Flip one bit.
        0 if len > 0 => {
            let at = rng.below(len);
            out[at] ^= 1 << rng.below(8);
        }
        // Set a byte to an interesting value.
        1 if len > 0 => {
            let at = rng.below(len);
            out[at] = INTERESTING[rng.below(INTERESTING.len())];
        }
        // Set a byte to anything.
        2 if len > 0 => {
            let at = rng.below(len);
            out[at] = rng.next_u64() as u8;
        }
        // Insert a few bytes.
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n)
                .map(|_| INTERESTING[rng.below(INTERESTING.len())])
                .collect();
            out.splice(at..at, bytes);
        }
        // Delete a range.
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(16));
            out.drain(at..at + n);
        }
        // Duplicate a range in place.
        5 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(32));
            let copy = out[at..at + n].to_vec();
            out.splice(at..at, copy);
        }
        // Splice in a range of another seed.
        6 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(64));
            let at = rng.below(len + 1);
            out.splice(at..at, other[from..from + n].iter().copied());
        }
        // Replace a run of ASCII digits with a limit-sitting number.
        7 => {
            let number = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())].as_bytes();
            let digits: Vec<usize> = (0..len).filter(|&i| out[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                let at = rng.below(len + 1);
                out.splice(at..at, number.iter().copied());
            } else {
                let start = digits[rng.below(digits.len())];
                let end = (start..len)
                    .find(|&i| !out[i].is_ascii_digit())
                    .unwrap_or(len);
                out.splice(start..end, number.iter().copied());
            }
        }
        // Cut the end off.
        _ => {
            out.truncate(rng.below(len + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{mutate, Rng};

    #[test]
    fn the_same_seed_gives_the_same_inputs_and_they_differ_from_the_seed() {
        let seed = b"attestd-file-list v1 1 abc\n";
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..100)
                .map(|_| mutate(seed, b"other", &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().filter(|m| m.as_slice() != seed).count() > 90);
    }
}
