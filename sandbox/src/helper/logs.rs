//! The step's stdout and stderr on their way to the daemon. The step writes
//! into pipes of the helper's; the helper hands each log on within
//! `max_log_bytes`: the first half of the cap as it comes, the last half
//! held back in a ring and written once the step is gone, and what lies
//! between dropped and counted.

use std::collections::VecDeque;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;

use super::write_all;
use crate::spec::LogCapture;
use crate::sys::Syscalls;

/// One log within its cap: passes its head on, keeps its tail.
#[derive(Debug)]
pub(crate) struct LogCap {
    /// Bytes of the head still to pass on as they come.
    head_left: u64,
    /// The most the tail ring holds.
    tail_cap: usize,
    /// The last bytes beyond the head, at most `tail_cap` of them.
    tail: VecDeque<u8>,
    /// What became of the log so far.
    capture: LogCapture,
    /// The daemon's end stopped reading (EPIPE): the rest is only counted.
    reader_gone: bool,
}

impl LogCap {
    /// A log of at most `cap` bytes handed on: `cap - cap / 2` of head,
    /// `cap / 2` of tail.
    pub(crate) fn new(cap: u64) -> LogCap {
        let tail_cap = usize::try_from(cap / 2).unwrap_or(usize::MAX);
        LogCap {
            head_left: cap - cap / 2,
            tail_cap,
            tail: VecDeque::new(),
            capture: LogCapture::default(),
            reader_gone: false,
        }
    }

    /// Takes `chunk`, the next bytes the step wrote: the part within the
    /// head goes to `out` now, the rest into the tail ring, whose oldest
    /// bytes are dropped to keep it within its cap.
    pub(crate) fn feed(&mut self, sys: &dyn Syscalls, out: BorrowedFd<'_>, chunk: &[u8]) {
        self.capture.step_bytes += chunk.len() as u64;
        let n = usize::try_from(self.head_left)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        let (head, rest) = chunk.split_at(n);
        if !head.is_empty() {
            self.head_left -= n as u64;
            self.capture.head_bytes += n as u64;
            self.pass_on(sys, out, head);
        }
        if rest.is_empty() {
            return;
        }
        if rest.len() >= self.tail_cap {
            // The whole ring and the start of the chunk fall out.
            self.capture.dropped_bytes += (self.tail.len() + rest.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&rest[rest.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + rest.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.capture.dropped_bytes += overflow as u64;
        if self.tail.capacity() < self.tail_cap {
            // Once, to its final size: the ring never grows past its cap.
            self.tail.reserve_exact(self.tail_cap - self.tail.len());
        }
        self.tail.extend(rest);
    }

    /// Once the step is gone: hands the tail on; what became of the log.
    pub(crate) fn finish(mut self, sys: &dyn Syscalls, out: BorrowedFd<'_>) -> LogCapture {
        let tail: Vec<u8> = std::mem::take(&mut self.tail).into();
        if !self.capture.truncated() {
            // Nothing dropped: the tail simply continues the head.
            self.capture.head_bytes += tail.len() as u64;
        }
        self.pass_on(sys, out, &tail);
        self.capture
    }

    fn pass_on(&mut self, sys: &dyn Syscalls, out: BorrowedFd<'_>, bytes: &[u8]) {
        if !self.reader_gone && write_all(sys, out, bytes) == Err(Errno::EPIPE) {
            self.reader_gone = true;
        }
    }

    /// The bytes held in memory now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.tail.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helper::read_to_end;
    use crate::sys::fake::RecordingSyscalls;
    use std::os::fd::AsFd;

    /// Feeds `chunks` through a cap of `cap` into a pipe; what came out,
    /// and the capture.
    fn through(cap: u64, chunks: &[&[u8]]) -> (Vec<u8>, LogCapture) {
        let sys = RecordingSyscalls::default();
        let (r, w) = sys.pipe().unwrap();
        let mut log = LogCap::new(cap);
        for c in chunks {
            log.feed(&sys, w.as_fd(), c);
            assert!(log.held() as u64 <= cap / 2);
        }
        let capture = log.finish(&sys, w.as_fd());
        drop(w);
        (read_to_end(&sys, r.as_fd()), capture)
    }

    #[test]
    fn a_log_within_its_cap_is_handed_on_whole() {
        let (out, c) = through(10, &[b"abc", b"defghij"]);
        assert_eq!(out, b"abcdefghij");
        assert_eq!(
            c,
            LogCapture {
                step_bytes: 10,
                dropped_bytes: 0,
                head_bytes: 10
            }
        );
        assert!(!c.truncated());
    }

    #[test]
    fn a_flood_keeps_its_first_and_last_bytes_and_counts_the_rest() {
        let flood: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let chunks: Vec<&[u8]> = flood.chunks(7).collect();
        let (out, c) = through(100, &chunks);
        assert_eq!(out.len(), 100);
        assert_eq!(&out[..50], &flood[..50]);
        assert_eq!(&out[50..], &flood[10_000 - 50..]);
        assert_eq!(
            c,
            LogCapture {
                step_bytes: 10_000,
                dropped_bytes: 9_900,
                head_bytes: 50
            }
        );
        assert!(c.truncated());
    }

    #[test]
    fn one_chunk_larger_than_the_whole_cap() {
        let big: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let (out, c) = through(11, &[b"", &big, b"z"]);
        // 6 of head, 5 of tail.
        assert_eq!(&out[..6], &big[..6]);
        assert_eq!(&out[6..], &[&big[996..], b"z"].concat()[..]);
        assert_eq!(c.dropped_bytes, 1001 - 11);
        assert_eq!(c.head_bytes, 6);
    }

    #[test]
    fn a_daemon_that_stopped_reading_does_not_stop_the_count() {
        let sys = RecordingSyscalls::default();
        let (r, w) = sys.pipe().unwrap();
        drop(r);
        let mut log = LogCap::new(4);
        log.feed(&sys, w.as_fd(), b"abcdef");
        log.feed(&sys, w.as_fd(), b"gh");
        let c = log.finish(&sys, w.as_fd());
        assert_eq!(c.step_bytes, 8);
        assert_eq!(c.dropped_bytes, 4);
        // One write failed with EPIPE; none was tried after it.
        let writes = sys
            .calls()
            .iter()
            .filter(|x| matches!(x, crate::sys::fake::Call::Write(_)))
            .count();
        assert_eq!(writes, 1);
    }
}
