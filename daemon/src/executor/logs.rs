//! The step's stdout and stderr: passed to the client as they come and
//! streamed into the content store, each within its cap.

use super::ExecutorError;
use super::{send, EventSender};
use crate::store::BlobWriter;
use attest_proto::v1::{build_event::Event, log_chunk::Stream, LogChunk};
use attest_sandbox::LogCapture;
use attest_tree::Digest;
use tokio::io::AsyncReadExt;

/// The name of a stream in messages.
pub(super) fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::Unspecified => "output",
    }
}

/// Forwards one of the step's output streams to the client as it comes,
/// and streams it into the content store (its digest goes into the
/// provenance's byproducts), in chunks of 64 KiB: the daemon never holds
/// more of a log than that in memory.
///
/// The helper already cuts each log to `cap` (head and tail kept), so at
/// most `cap` bytes arrive. The daemon does not take that on trust: bytes
/// past `cap` are read and dropped, never stored or sent, so a log takes at
/// most `cap` on disk whatever the helper does, and the build then fails
/// as a sandbox fault ([`ExecutorError::LogOverCap`]).
pub(super) async fn pump_log(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    stream: Stream,
    cap: u64,
    tx: EventSender,
    mut blob: BlobWriter,
) -> Result<Digest, ExecutorError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut client_gone = false;
    let mut received: u64 = 0;
    loop {
        let n = match pipe.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(source) => {
                return Err(ExecutorError::StepOutput {
                    stream: stream_name(stream),
                    source,
                })
            }
        };
        let room = cap.saturating_sub(received);
        received += n as u64;
        let kept = &buffer[..n.min(usize::try_from(room).unwrap_or(usize::MAX))];
        if kept.is_empty() {
            // Over the cap: drained so the helper is never blocked on a
            // full pipe, and dropped.
            continue;
        }
        tokio::task::block_in_place(|| blob.write(kept))?;
        if !client_gone {
            let chunk = LogChunk {
                stream: stream as i32,
                data: kept.to_vec(),
            };
            client_gone = !send(&tx, Event::Log(chunk)).await;
        }
    }
    if received > cap {
        // The writer is dropped unfinished: its temporary file goes too.
        return Err(ExecutorError::LogOverCap {
            stream: stream_name(stream),
            cap,
            received,
        });
    }
    Ok(tokio::task::block_in_place(|| blob.finish())?)
}

/// Checks what the helper reports of a log against what the daemon
/// stored of it, before the report's counts go into a signed provenance:
/// the bytes kept (written less dropped) are the bytes stored, and the gap
/// lies within them.
pub(super) fn check_capture(
    stream: Stream,
    stored: &Digest,
    capture: &LogCapture,
) -> Result<(), ExecutorError> {
    let kept = capture.step_bytes.checked_sub(capture.dropped_bytes);
    match kept {
        Some(kept) if kept == stored.size && capture.head_bytes <= kept => Ok(()),
        _ => Err(ExecutorError::LogReportMismatch {
            stream: stream_name(stream),
            stored: stored.size,
            step_bytes: capture.step_bytes,
            dropped_bytes: capture.dropped_bytes,
            head_bytes: capture.head_bytes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlobStore;

    async fn pumped(bytes: Vec<u8>, cap: u64) -> (Result<Digest, ExecutorError>, Vec<u8>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let before = bytes_under(dir.path());
        let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 16);
        let result = pump_log(
            &bytes[..],
            Stream::Stdout,
            cap,
            tx,
            store.writer_unnamed().unwrap(),
        )
        .await;
        let mut sent = Vec::new();
        while let Ok(Ok(event)) = rx.try_recv() {
            if let Some(Event::Log(chunk)) = event.event {
                sent.extend(chunk.data);
            }
        }
        let grown = bytes_under(dir.path()) - before;
        (result, sent, grown)
    }

    /// Bytes of every file under `dir`.
    fn bytes_under(dir: &std::path::Path) -> u64 {
        let mut total = 0;
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            total += if meta.is_dir() {
                bytes_under(&entry.path())
            } else {
                meta.len()
            };
        }
        total
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_log_within_its_cap_is_stored_and_sent_whole() {
        let log: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let (result, sent, grown) = pumped(log.clone(), 200_000).await;
        assert_eq!(result.unwrap(), attest_tree::hash_bytes(&log));
        assert_eq!(sent, log);
        assert_eq!(grown, 200_000);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_helper_passing_on_more_than_the_cap_fails_the_build_and_stores_nothing_past_it() {
        let (result, sent, grown) = pumped(vec![b'x'; 300_000], 100_000).await;
        match result {
            Err(ExecutorError::LogOverCap {
                stream,
                cap,
                received,
            }) => assert_eq!((stream, cap, received), ("stdout", 100_000, 300_000)),
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(sent.len(), 100_000, "sent past the cap");
        // The unfinished blob's temporary file is gone with its writer.
        assert_eq!(grown, 0);
    }

    #[test]
    fn a_report_whose_log_counts_disagree_with_the_stored_log_is_refused() {
        let stored = attest_tree::hash_bytes(&[b'x'; 100]);
        let cut = LogCapture {
            step_bytes: 1000,
            dropped_bytes: 900,
            head_bytes: 50,
        };
        check_capture(Stream::Stdout, &stored, &cut).unwrap();
        let whole = LogCapture {
            step_bytes: 100,
            dropped_bytes: 0,
            head_bytes: 100,
        };
        check_capture(Stream::Stdout, &stored, &whole).unwrap();
        for lie in [
            // More kept than stored, or less.
            LogCapture {
                step_bytes: 1000,
                dropped_bytes: 800,
                head_bytes: 50,
            },
            LogCapture {
                step_bytes: 99,
                dropped_bytes: 0,
                head_bytes: 99,
            },
            // More dropped than written.
            LogCapture {
                step_bytes: 10,
                dropped_bytes: 20,
                head_bytes: 0,
            },
            // A gap after the end.
            LogCapture {
                step_bytes: 1000,
                dropped_bytes: 900,
                head_bytes: 101,
            },
        ] {
            match check_capture(Stream::Stderr, &stored, &lie) {
                Err(ExecutorError::LogReportMismatch {
                    stream,
                    stored: size,
                    step_bytes,
                    dropped_bytes,
                    head_bytes,
                }) => assert_eq!(
                    (stream, size, step_bytes, dropped_bytes, head_bytes),
                    (
                        "stderr",
                        100,
                        lie.step_bytes,
                        lie.dropped_bytes,
                        lie.head_bytes
                    )
                ),
                other => panic!("{lie:?} was not refused: {other:?}"),
            }
        }
    }
}
