//! The step's stdout and stderr: passed to the client as they come and
//! stored whole.

use super::ExecutorError;
use super::{send, EventSender};
use crate::store::BlobWriter;
use attest_proto::v1::{build_event::Event, log_chunk::Stream, LogChunk};
use attest_tree::Digest;
use tokio::io::AsyncReadExt;

/// Forwards one of the step's output streams to the client as it comes,
/// and stores it whole in the content store (its digest goes into the
/// provenance's byproducts).
pub(super) async fn pump_log(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    stream: Stream,
    tx: EventSender,
    mut blob: BlobWriter,
) -> Result<Digest, ExecutorError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut client_gone = false;
    loop {
        let n = match pipe.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(source) => {
                return Err(ExecutorError::StepOutput {
                    stream: match stream {
                        Stream::Stdout => "stdout",
                        Stream::Stderr => "stderr",
                        Stream::Unspecified => "output",
                    },
                    source,
                })
            }
        };
        tokio::task::block_in_place(|| blob.write(&buffer[..n]))?;
        if !client_gone {
            let chunk = LogChunk {
                stream: stream as i32,
                data: buffer[..n].to_vec(),
            };
            client_gone = !send(&tx, Event::Log(chunk)).await;
        }
    }
    Ok(tokio::task::block_in_place(|| blob.finish())?)
}
