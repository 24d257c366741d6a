//! Lets stock gRPC clients talk to the daemon over its Unix socket with
//! their default options, by rewriting a `:authority` that h2 would refuse.
//!
//! The problem: a client dialing `unix:/run/attestd/attestd.sock` has no
//! host name to put in `:authority`. grpc-core (Python `grpcio`, C++, Ruby)
//! sends the percent-encoded socket path (`%2Frun%2Fattestd%2Fattestd.sock`),
//! grpc-java sends the raw path, grpc-go sends `localhost`. h2 parses
//! `:authority` as an `http::uri::Authority` before tonic sees the request
//! and answers anything that does not parse with `RST_STREAM
//! (PROTOCOL_ERROR)` (hyperium/h2#487, grpc/grpc#38142), so every call of
//! those clients, health checks included, failed. Neither h2 nor hyper nor
//! tonic has an option to accept such an authority.
//!
//! The fix, chosen over a patched vendored h2 because it applies to Unix
//! socket connections only (a later TCP listener with mTLS keeps h2's
//! checks untouched) and leaves every other byte to h2: each accepted
//! [`UnixStream`] is wrapped in a [`UdsConnection`], which parses the
//! client-to-server direction of the HTTP/2 connection and rewrites header
//! blocks; the server-to-client direction is not touched.
//!
//! - The 24-byte client preface is checked and passed on.
//! - Every frame's 9-byte header is read. DATA, SETTINGS, WINDOW_UPDATE,
//!   PING, RST_STREAM, GOAWAY, PRIORITY and unknown frames pass through
//!   byte for byte, streamed, never buffered; h2 judges them.
//! - A HEADERS frame and its CONTINUATION frames are collected into one
//!   header block (at most [`MAX_BLOCK_BYTES`]), padding stripped, and
//!   decoded with an HPACK decoder that tracks the client's dynamic table
//!   (and its table-size updates, up to the 4096 bytes h2 advertises: tonic
//!   and hyper never set SETTINGS_HEADER_TABLE_SIZE, so the default holds).
//!   The block is re-encoded with every field a literal without indexing,
//!   so the server's decoder never adds to its own dynamic table and the
//!   two tables cannot drift apart; `:authority` is kept when it parses as
//!   an `http::uri::Authority` and replaced by `localhost` otherwise. The
//!   result goes out as HEADERS (with the original END_STREAM and priority)
//!   plus as many CONTINUATION frames as needed to keep each frame within
//!   16,384 bytes, the smallest SETTINGS_MAX_FRAME_SIZE a peer may have.
//! - A header frame longer than the server's SETTINGS_MAX_FRAME_SIZE,
//!   which h2 would refuse, is accepted up to the block limit: the adapter
//!   does not read the server's settings, and a lenient reader here lets
//!   server.rs raise that setting without touching this file.
//! - Any framing or HPACK error closes the connection: the wrapper's read
//!   fails, hyper drops the connection, and nothing half rewritten is ever
//!   passed on. PUSH_PROMISE from a client is such an error (RFC 9113
//!   8.4: only servers push).
//!
//! The HPACK decoder is `loona-hpack` 0.4 (bearcove's fork of `hpack` 0.3,
//! first as `fluke-hpack`, made in 2023 to pass h2spec; last release
//! November 2024), the most recently kept of the candidates: `hpack` 0.3
//! itself has had no release since 2016 and `httlib-hpack` none since
//! 2021 (it serves here only as an independent encoder in the tests), and
//! h2's own HPACK module is private. It decodes Huffman strings, tracks
//! the dynamic table, refuses a table-size update above the maximum and
//! reports malformed input as errors (the corruption test below feeds it
//! a thousand broken connections). Its Huffman decoder is slower than
//! h2's (it builds its code table for every string), which matters little
//! for a daemon whose every call starts a build or moves blobs. The
//! encoder side needs nothing beyond its integer encoding: a literal
//! without indexing is a flag byte and two length-prefixed strings.

use loona_hpack::decoder::DecoderError;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// The HTTP/2 client connection preface (RFC 9113 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of a frame header (RFC 9113 4.1).
const FRAME_HEADER_LEN: usize = 9;

/// Largest payload of a frame this adapter writes: the initial
/// SETTINGS_MAX_FRAME_SIZE, which every HTTP/2 peer must accept.
const MAX_OUT_FRAME: usize = 16_384;

/// Largest header block (compressed, all its frames together) accepted.
/// hyper refuses header lists above 16 KiB decoded anyway; this bound only
/// keeps a hostile client from making the adapter buffer without end.
pub const MAX_BLOCK_BYTES: usize = 1 << 20;

/// Largest decoded header list (RFC 7541 sizes: name + value + 32 per
/// field) the adapter re-encodes. Indexed references make a block expand
/// up to 4096 times, so the compressed bound alone does not bound this.
pub const MAX_DECODED_BYTES: usize = 1 << 20;

/// The dynamic table size the server advertises (h2's default, which
/// tonic and hyper leave as it is): the most a client's encoder may use.
/// Were server.rs ever to set `http2_header_table_size`, this must follow,
/// or clients using the bigger table would be disconnected.
const SERVER_HEADER_TABLE_SIZE: usize = 4_096;

/// What `:authority` becomes when the client's does not parse.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why a connection was closed by the adapter.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum RewriteError {
    #[error("the connection did not start with the http/2 client preface")]
    BadPreface,
    #[error("the connection was already closed for an earlier error")]
    AlreadyClosed,
    #[error("headers frame on stream 0")]
    HeadersOnStreamZero,
    #[error("push_promise frame from a client (stream {stream})")]
    PushPromise { stream: u32 },
    #[error("frame of type {frame_type:#x} on stream {stream} inside the unfinished header block of stream {block_stream}")]
    InterruptedHeaderBlock {
        frame_type: u8,
        stream: u32,
        block_stream: u32,
    },
    #[error("continuation frame on stream {stream} with no header block to continue")]
    UnexpectedContinuation { stream: u32 },
    #[error("headers frame on stream {stream} is shorter than its padding and priority fields")]
    BadPadding { stream: u32 },
    #[error("header block of stream {stream} exceeds {limit} bytes")]
    BlockTooLarge { stream: u32, limit: usize },
    #[error("header block of stream {stream} decodes to more than {limit} bytes")]
    DecodedTooLarge { stream: u32, limit: usize },
    #[error("header block of stream {stream} is not valid hpack")]
    Hpack {
        stream: u32,
        #[source]
        source: DecoderError,
    },
}

/// A frame header as read off the wire.
#[derive(Clone, Copy, Debug)]
struct FrameHeader {
    len: usize,
    frame_type: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8]) -> FrameHeader {
        FrameHeader {
            len: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            frame_type: bytes[3],
            flags: bytes[4],
            // The reserved top bit is ignored on receipt (RFC 9113 4.1).
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    /// The 5 priority bytes of the HEADERS frame, when it had them.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

enum State {
    /// Collecting the 24-byte preface.
    Preface,
    /// Collecting a 9-byte frame header.
    FrameHeader,
    /// Copying this many more payload bytes of a frame that passes through.
    Passthrough(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    HeaderPayload(FrameHeader),
    /// An error was reported; nothing more is read.
    Failed,
}

/// The client-to-server rewriter, free of I/O so tests can feed it bytes
/// in any chunking: [`Rewriter::feed`] takes what the client sent and
/// appends what the server should see.
pub struct Rewriter {
    state: State,
    /// Bytes of the unit being collected (preface, frame header, payload).
    pending: Vec<u8>,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    pub fn new() -> Rewriter {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(SERVER_HEADER_TABLE_SIZE);
        decoder.set_max_table_size(SERVER_HEADER_TABLE_SIZE);
        Rewriter {
            state: State::Preface,
            pending: Vec::new(),
            block: None,
            decoder,
        }
    }

    /// Consumes `input` (bytes from the client, any chunking) and appends
    /// to `out` the bytes the server should read. After an error every
    /// later call fails too, and `out` may hold bytes of complete frames
    /// only, never part of a rewritten block.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match self.state {
                State::Failed => return Err(RewriteError::AlreadyClosed),
                State::Preface => {
                    if !self.collect(&mut input, PREFACE.len()) {
                        continue;
                    }
                    if self.pending != PREFACE {
                        return self.fail(RewriteError::BadPreface);
                    }
                    out.extend_from_slice(PREFACE);
                    self.pending.clear();
                    self.state = State::FrameHeader;
                }
                State::FrameHeader => {
                    if !self.collect(&mut input, FRAME_HEADER_LEN) {
                        continue;
                    }
                    let header = FrameHeader::parse(&self.pending);
                    if let Err(e) = self.start_frame(header, out) {
                        return self.fail(e);
                    }
                }
                State::Passthrough(remaining) => {
                    let n = remaining.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if remaining == n {
                        State::FrameHeader
                    } else {
                        State::Passthrough(remaining - n)
                    };
                }
                State::HeaderPayload(header) => {
                    if !self.collect(&mut input, header.len) {
                        continue;
                    }
                    if let Err(e) = self.header_payload(header, out) {
                        return self.fail(e);
                    }
                    self.pending.clear();
                    self.state = State::FrameHeader;
                }
            }
        }
        // A frame whose payload is empty completes without more input.
        if let State::HeaderPayload(header) = self.state {
            if header.len == 0 {
                if let Err(e) = self.header_payload(header, out) {
                    return self.fail(e);
                }
                self.state = State::FrameHeader;
            }
        }
        Ok(())
    }

    /// How many payload bytes of a frame that passes through are still to
    /// come, when the rewriter is inside one: those bytes may go to the
    /// server without a copy through [`Rewriter::feed`] (DATA frames, so
    /// uploads, are nearly all of a connection's bytes).
    pub fn passthrough_remaining(&self) -> Option<usize> {
        match self.state {
            State::Passthrough(remaining) => Some(remaining),
            _ => None,
        }
    }

    /// Records that `n` bytes of the current pass-through payload (at most
    /// [`Rewriter::passthrough_remaining`]) went to the server directly.
    pub fn skip_passthrough(&mut self, n: usize) {
        if let State::Passthrough(remaining) = self.state {
            self.state = if n >= remaining {
                State::FrameHeader
            } else {
                State::Passthrough(remaining - n)
            };
        }
    }

    /// Whether the connection was closed for an error.
    pub fn has_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    fn fail(&mut self, error: RewriteError) -> Result<(), RewriteError> {
        self.state = State::Failed;
        self.pending.clear();
        self.block = None;
        Err(error)
    }

    /// Moves bytes from `input` into `pending` until it holds `want`;
    /// returns whether it does.
    fn collect(&mut self, input: &mut &[u8], want: usize) -> bool {
        let n = (want - self.pending.len()).min(input.len());
        self.pending.extend_from_slice(&input[..n]);
        *input = &input[n..];
        self.pending.len() == want
    }

    /// Acts on a frame header just read (held in `pending`).
    fn start_frame(&mut self, header: FrameHeader, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if let Some(block) = &self.block {
            // RFC 9113 6.10: a header block is contiguous on the wire.
            if header.frame_type != TYPE_CONTINUATION || header.stream != block.stream {
                return Err(RewriteError::InterruptedHeaderBlock {
                    frame_type: header.frame_type,
                    stream: header.stream,
                    block_stream: block.stream,
                });
            }
        }
        match header.frame_type {
            TYPE_HEADERS | TYPE_CONTINUATION => {
                if header.frame_type == TYPE_HEADERS && header.stream == 0 {
                    return Err(RewriteError::HeadersOnStreamZero);
                }
                if header.frame_type == TYPE_CONTINUATION && self.block.is_none() {
                    return Err(RewriteError::UnexpectedContinuation {
                        stream: header.stream,
                    });
                }
                let collected = self.block.as_ref().map_or(0, |b| b.fragment.len());
                if collected + header.len > MAX_BLOCK_BYTES {
                    return Err(RewriteError::BlockTooLarge {
                        stream: header.stream,
                        limit: MAX_BLOCK_BYTES,
                    });
                }
                self.pending.clear();
                self.state = State::HeaderPayload(header);
            }
            TYPE_PUSH_PROMISE => {
                return Err(RewriteError::PushPromise {
                    stream: header.stream,
                })
            }
            _ => {
                out.extend_from_slice(&self.pending);
                self.pending.clear();
                self.state = if header.len == 0 {
                    State::FrameHeader
                } else {
                    State::Passthrough(header.len)
                };
            }
        }
        Ok(())
    }

    /// Adds a complete HEADERS or CONTINUATION payload (in `pending`) to
    /// the block, and rewrites the block once it is complete.
    fn header_payload(
        &mut self,
        header: FrameHeader,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let payload = &self.pending[..];
        if header.frame_type == TYPE_HEADERS {
            let bad = || RewriteError::BadPadding {
                stream: header.stream,
            };
            let mut body = payload;
            let mut pad = 0;
            if header.flags & FLAG_PADDED != 0 {
                let (&len, rest) = body.split_first().ok_or_else(bad)?;
                pad = usize::from(len);
                body = rest;
            }
            let mut priority = None;
            if header.flags & FLAG_PRIORITY != 0 {
                if body.len() < 5 {
                    return Err(bad());
                }
                let mut bytes = [0; 5];
                bytes.copy_from_slice(&body[..5]);
                priority = Some(bytes);
                body = &body[5..];
            }
            // RFC 9113 6.2: padding that reaches into the fields is an error.
            if pad > body.len() {
                return Err(bad());
            }
            self.block = Some(Block {
                stream: header.stream,
                end_stream: header.flags & FLAG_END_STREAM != 0,
                priority,
                fragment: body[..body.len() - pad].to_vec(),
            });
        } else if let Some(block) = &mut self.block {
            block.fragment.extend_from_slice(payload);
        }
        if header.flags & FLAG_END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                let encoded = rewrite_block(&mut self.decoder, &block)?;
                write_block(&block, &encoded, out);
            }
        }
        Ok(())
    }
}

/// Decodes one complete header block against the connection's dynamic
/// table and re-encodes it without the dynamic table, `:authority` fixed.
fn rewrite_block(
    decoder: &mut loona_hpack::Decoder<'static>,
    block: &Block,
) -> Result<Vec<u8>, RewriteError> {
    let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
    let mut decoded_size = 0usize;
    let mut too_large = false;
    decoder
        .decode_with_cb(&block.fragment, |name, value| {
            decoded_size += name.len() + value.len() + 32;
            if decoded_size > MAX_DECODED_BYTES {
                // Keep decoding (the table must stay in step) but stop
                // producing output; the block is refused below.
                too_large = true;
            }
            if too_large {
                return;
            }
            let value: &[u8] = if &*name == b":authority" && !is_valid_authority(&value) {
                LOCAL_AUTHORITY
            } else {
                &value
            };
            encode_literal(&name, value, &mut encoded);
        })
        .map_err(|source| RewriteError::Hpack {
            stream: block.stream,
            source,
        })?;
    if too_large {
        return Err(RewriteError::DecodedTooLarge {
            stream: block.stream,
            limit: MAX_DECODED_BYTES,
        });
    }
    Ok(encoded)
}

/// Whether h2 accepts `value` as `:authority` (the same parse it makes).
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// RFC 7541 6.2.2, literal header field without indexing, new name; no
/// Huffman (the server's decoder takes either).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for string in [name, value] {
        // Writing to a Vec cannot fail.
        let _ = loona_hpack::encoder::encode_integer_into(string.len(), 7, 0, out);
        out.extend_from_slice(string);
    }
}

/// Writes a rewritten block as HEADERS plus CONTINUATION frames, each
/// payload at most [`MAX_OUT_FRAME`] bytes.
fn write_block(block: &Block, encoded: &[u8], out: &mut Vec<u8>) {
    let priority_len = block.priority.map_or(0, |_| 5);
    let first = encoded.len().min(MAX_OUT_FRAME - priority_len);
    let (head, mut rest) = encoded.split_at(first);
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame_header(
        out,
        priority_len + head.len(),
        TYPE_HEADERS,
        flags,
        block.stream,
    );
    if let Some(priority) = block.priority {
        out.extend_from_slice(&priority);
    }
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_OUT_FRAME);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame_header(out, n, TYPE_CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
    }
}

fn write_frame_header(out: &mut Vec<u8>, len: usize, frame_type: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).expect("frame payloads are at most 16384 bytes");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(frame_type);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// An accepted Unix-socket connection whose client-to-server bytes go
/// through a [`Rewriter`]; writes pass straight through.
pub struct UdsConnection {
    inner: UnixStream,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the server.
    out: Vec<u8>,
    /// How much of `out` has been handed over.
    out_pos: usize,
    read_buf: Box<[u8]>,
    eof: bool,
}

impl UdsConnection {
    pub fn new(inner: UnixStream) -> UdsConnection {
        UdsConnection {
            inner,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            out_pos: 0,
            read_buf: vec![0; 16 * 1024].into_boxed_slice(),
            eof: false,
        }
    }
}

impl Connected for UdsConnection {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for UdsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || this.rewriter.has_failed() {
                // End of stream: a failed rewriter never produces more.
                return Poll::Ready(Ok(()));
            }
            if let Some(remaining) = this.rewriter.passthrough_remaining() {
                // Inside a pass-through payload: read straight into the
                // caller's buffer, never past the payload's end.
                let want = remaining.min(buf.remaining());
                let mut direct = ReadBuf::new(buf.initialize_unfilled_to(want));
                match Pin::new(&mut this.inner).poll_read(cx, &mut direct) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                let n = direct.filled().len();
                if n == 0 {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                this.rewriter.skip_passthrough(n);
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.read_buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let filled = read.filled();
            if filled.is_empty() {
                this.eof = true;
                continue;
            }
            if let Err(e) = this.rewriter.feed(filled, &mut this.out) {
                tracing::warn!(error = %e, "closing a unix-socket connection");
                // Whatever complete frames came before the error are
                // dropped too: the connection is over.
                this.out.clear();
                this.out_pos = 0;
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl AsyncWrite for UdsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    //! Header blocks come from `httlib-hpack`, an encoder independent of
    //! the decoder under test, with its dynamic table and Huffman coding
    //! in use; the rewritten output is decoded with a fresh decoder per
    //! block, which only succeeds if the output never refers to a dynamic
    //! table.
    use super::*;
    use httlib_hpack::Encoder;

    const HUFFMAN: u8 = Encoder::HUFFMAN_NAME | Encoder::HUFFMAN_VALUE;
    const INDEX: u8 = Encoder::WITH_INDEXING | Encoder::BEST_FORMAT;
    const GRPCIO_AUTHORITY: &str = "%2Ftmp%2Fx%2Fattestd.sock";

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn grpc_request(authority: Option<&str>, path: &str) -> Fields {
        let mut fields = vec![
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":method".to_vec(), b"POST".to_vec()),
        ];
        if let Some(authority) = authority {
            fields.push((b":authority".to_vec(), authority.as_bytes().to_vec()));
        }
        fields.extend([
            (b":path".to_vec(), path.as_bytes().to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (
                b"user-agent".to_vec(),
                b"grpc-python/1.76.0 grpc-c/51.0.0 (linux; chttp2)".to_vec(),
            ),
        ]);
        fields
    }

    fn encode(encoder: &mut Encoder, fields: &Fields, flags: u8) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in fields {
            encoder
                .encode((name.clone(), value.clone(), flags), &mut block)
                .expect("encode a header field");
        }
        block
    }

    fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame_header(&mut out, payload.len(), frame_type, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    fn headers(stream: u32, block: &[u8]) -> Vec<u8> {
        frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, block)
    }

    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        for f in frames {
            bytes.extend_from_slice(f);
        }
        bytes
    }

    fn rewrite(bytes: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut out = Vec::new();
        Rewriter::new().feed(bytes, &mut out)?;
        Ok(out)
    }

    /// One frame of the rewritten output.
    #[derive(Debug, PartialEq)]
    struct Frame {
        frame_type: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    fn frames(out: &[u8]) -> Vec<Frame> {
        assert_eq!(&out[..24], PREFACE, "the preface is passed on");
        let mut rest = &out[24..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let header = FrameHeader::parse(&rest[..9]);
            frames.push(Frame {
                frame_type: header.frame_type,
                flags: header.flags,
                stream: header.stream,
                payload: rest[9..9 + header.len].to_vec(),
            });
            rest = &rest[9 + header.len..];
        }
        frames
    }

    /// The header blocks of the output, in order, each decoded with a
    /// fresh decoder (so with no dynamic table); also checks the framing
    /// the adapter promises: frames within 16,384 bytes, a block is one
    /// HEADERS and then CONTINUATIONs, END_HEADERS on the last only.
    fn blocks(out: &[u8]) -> Vec<(Frame, Fields)> {
        let mut result = Vec::new();
        let mut open: Option<(Frame, Vec<u8>)> = None;
        for f in frames(out) {
            let end_headers = f.flags & FLAG_END_HEADERS != 0;
            assert!(
                f.payload.len() <= MAX_OUT_FRAME,
                "frame of {} bytes",
                f.payload.len()
            );
            let fragment = match f.frame_type {
                TYPE_HEADERS => {
                    assert!(open.is_none(), "HEADERS inside a block");
                    assert_eq!(f.flags & FLAG_PADDED, 0, "padding is stripped");
                    let skip = if f.flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
                    let fragment = f.payload[skip..].to_vec();
                    open = Some((f, Vec::new()));
                    fragment
                }
                TYPE_CONTINUATION => {
                    let (first, _) = open.as_ref().expect("CONTINUATION inside a block");
                    assert_eq!(f.stream, first.stream);
                    f.payload.clone()
                }
                _ => {
                    assert!(open.is_none(), "a frame inside a header block");
                    continue;
                }
            };
            let (_, block) = open.as_mut().expect("an open block");
            block.extend_from_slice(&fragment);
            if end_headers {
                let (first, block) = open.take().expect("an open block");
                let fields = loona_hpack::Decoder::new()
                    .decode(&block)
                    .expect("the output decodes without any dynamic table");
                result.push((first, fields));
            }
        }
        assert!(open.is_none(), "a header block left unfinished");
        result
    }

    fn with_authority(fields: &Fields, authority: &str) -> Fields {
        fields
            .iter()
            .map(|(n, v)| {
                if n == b":authority" {
                    (n.clone(), authority.as_bytes().to_vec())
                } else {
                    (n.clone(), v.clone())
                }
            })
            .collect()
    }

    #[test]
    fn grpcio_percent_encoded_authority_becomes_localhost_across_requests() {
        // Three requests on one connection, every field indexed: the
        // second and third are mostly references into the dynamic table,
        // so they decode right only if the adapter tracks it.
        let mut encoder = Encoder::default();
        let paths = [
            "/grpc.health.v1.Health/Check",
            "/attest.v1.Keys/GetPublicKeys",
            "/grpc.health.v1.Health/Check",
        ];
        let requests: Vec<Fields> = paths
            .iter()
            .map(|p| grpc_request(Some(GRPCIO_AUTHORITY), p))
            .collect();
        let mut wire = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            let block = encode(&mut encoder, request, HUFFMAN | INDEX);
            wire.push(headers(1 + 2 * i as u32, &block));
        }
        assert!(
            wire[2].len() < wire[0].len() / 2,
            "the third request reuses the dynamic table"
        );
        let out = rewrite(&connection(&wire)).expect("rewrite");
        let got = blocks(&out);
        assert_eq!(got.len(), 3);
        for (i, (first, fields)) in got.iter().enumerate() {
            assert_eq!(first.stream, 1 + 2 * i as u32);
            assert_eq!(fields, &with_authority(&requests[i], "localhost"));
        }
    }

    #[test]
    fn authority_forms_of_real_clients() {
        let cases: [(Option<&str>, Option<&str>); 7] = [
            // grpc-go
            (Some("localhost"), Some("localhost")),
            // a valid host:port stays as it is
            (Some("attestd.example:443"), Some("attestd.example:443")),
            (Some("[::1]:50051"), Some("[::1]:50051")),
            // grpc-java: the raw socket path
            (Some("/tmp/x/attestd.sock"), Some("localhost")),
            // grpcio (grpc-core)
            (Some(GRPCIO_AUTHORITY), Some("localhost")),
            (Some(""), Some("localhost")),
            // absent stays absent
            (None, None),
        ];
        for (sent, expected) in cases {
            let request = grpc_request(sent, "/grpc.health.v1.Health/Check");
            let block = encode(&mut Encoder::default(), &request, 0);
            let out = rewrite(&connection(&[headers(1, &block)])).expect("rewrite");
            let got = blocks(&out);
            let authority = got[0]
                .1
                .iter()
                .find(|(n, _)| n == b":authority")
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap());
            assert_eq!(authority.as_deref(), expected, "sent {sent:?}");
            let others: Fields = got[0]
                .1
                .iter()
                .filter(|(n, _)| n != b":authority")
                .cloned()
                .collect();
            let sent_others: Fields = request
                .into_iter()
                .filter(|(n, _)| n != b":authority")
                .collect();
            assert_eq!(others, sent_others, "the other fields are kept, in order");
        }
    }

    #[test]
    fn huffman_on_and_off_decode_alike() {
        let request = grpc_request(Some(GRPCIO_AUTHORITY), "/attest.v1.Build/Execute");
        let plain = encode(&mut Encoder::default(), &request, 0);
        let huffman = encode(&mut Encoder::default(), &request, HUFFMAN);
        assert_ne!(plain, huffman);
        let out_plain = rewrite(&connection(&[headers(1, &plain)])).expect("rewrite plain");
        let out_huffman = rewrite(&connection(&[headers(1, &huffman)])).expect("rewrite huffman");
        assert_eq!(out_plain, out_huffman);
        assert_eq!(
            blocks(&out_plain)[0].1,
            with_authority(&request, "localhost")
        );
    }

    #[test]
    fn continuation_frames_in_and_out() {
        // 40 KB of metadata: the client splits the block into HEADERS and
        // CONTINUATIONs, and so must the adapter, each within 16,384 bytes.
        let mut request = grpc_request(Some(GRPCIO_AUTHORITY), "/attest.v1.Build/Execute");
        request.push((b"x-big-bin".to_vec(), vec![b'a'; 40_000]));
        let block = encode(&mut Encoder::default(), &request, 0);
        let chunks: Vec<&[u8]> = block.chunks(10_000).collect();
        let mut wire = vec![frame(TYPE_HEADERS, FLAG_END_STREAM, 3, chunks[0])];
        for (i, chunk) in chunks[1..].iter().enumerate() {
            let last = i + 2 == chunks.len();
            let flags = if last { FLAG_END_HEADERS } else { 0 };
            wire.push(frame(TYPE_CONTINUATION, flags, 3, chunk));
        }
        let out = rewrite(&connection(&wire)).expect("rewrite");
        let all = frames(&out);
        assert_eq!(all[0].frame_type, TYPE_HEADERS);
        assert_eq!(
            all[0].flags, FLAG_END_STREAM,
            "END_STREAM kept, END_HEADERS not yet"
        );
        assert!(all.len() >= 3);
        assert!(all[1..].iter().all(|f| f.frame_type == TYPE_CONTINUATION));
        let got = blocks(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, with_authority(&request, "localhost"));
    }

    #[test]
    fn padded_headers_with_priority() {
        let request = grpc_request(Some(GRPCIO_AUTHORITY), "/attest.v1.Keys/GetPublicKeys");
        let block = encode(&mut Encoder::default(), &request, HUFFMAN | INDEX);
        let priority = [0x80, 0, 0, 1, 200]; // exclusive on stream 1, weight 201
        let mut payload = vec![7];
        payload.extend_from_slice(&priority);
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0; 7]);
        let flags = FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS | FLAG_END_STREAM;
        let out =
            rewrite(&connection(&[frame(TYPE_HEADERS, flags, 5, &payload)])).expect("rewrite");
        let all = frames(&out);
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].flags,
            FLAG_PRIORITY | FLAG_END_HEADERS | FLAG_END_STREAM
        );
        assert_eq!(all[0].payload[..5], priority);
        assert_eq!(blocks(&out)[0].1, with_authority(&request, "localhost"));
    }

    #[test]
    fn table_size_updates_are_followed() {
        let mut encoder = Encoder::default();
        let first = grpc_request(Some(GRPCIO_AUTHORITY), "/a/One");
        let second = grpc_request(Some(GRPCIO_AUTHORITY), "/a/Two");
        let third = grpc_request(Some(GRPCIO_AUTHORITY), "/a/Three");
        let block1 = encode(&mut encoder, &first, HUFFMAN | INDEX);
        // Shrink the table to nothing (evicting everything), then grow it
        // back and index again: a decoder that ignored the updates would
        // resolve the third block's references to stale entries.
        let mut block2 = Vec::new();
        encoder.update_max_dynamic_size(0, &mut block2).unwrap();
        encoder.update_max_dynamic_size(4096, &mut block2).unwrap();
        block2.extend(encode(&mut encoder, &second, INDEX));
        let block3 = encode(&mut encoder, &third, HUFFMAN | INDEX);
        let wire = [
            headers(1, &block1),
            headers(3, &block2),
            headers(5, &block3),
        ];
        let out = rewrite(&connection(&wire)).expect("rewrite");
        let got: Vec<Fields> = blocks(&out).into_iter().map(|(_, f)| f).collect();
        assert_eq!(
            got,
            [&first, &second, &third].map(|r| with_authority(r, "localhost"))
        );
    }

    #[test]
    fn table_size_update_above_the_servers_setting_closes() {
        let mut block = Vec::new();
        let mut encoder = Encoder::default();
        encoder.update_max_dynamic_size(8192, &mut block).unwrap();
        block.extend(encode(&mut encoder, &grpc_request(None, "/a/B"), 0));
        assert_eq!(
            rewrite(&connection(&[headers(1, &block)])),
            Err(RewriteError::Hpack {
                stream: 1,
                source: DecoderError::InvalidMaxDynamicSize
            })
        );
    }

    #[test]
    fn other_frames_pass_through_byte_for_byte_in_any_chunking() {
        let mut encoder = Encoder::default();
        let request = grpc_request(Some(GRPCIO_AUTHORITY), "/attest.v1.Build/Execute");
        let settings = frame(0x4, 0, 0, &[0, 4, 0, 0x10, 0, 0]);
        let window = frame(0x8, 0, 0, &[0, 0x0f, 0, 1]);
        let data = frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\x05hello");
        let empty_data = frame(0x0, 0, 1, b"");
        let wire = connection(&[
            settings.clone(),
            window.clone(),
            frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS,
                1,
                &encode(&mut encoder, &request, HUFFMAN | INDEX),
            ),
            empty_data.clone(),
            data.clone(),
            frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS,
                3,
                &encode(&mut encoder, &request, HUFFMAN | INDEX),
            ),
        ]);
        let whole = rewrite(&wire).expect("rewrite");
        let mut rewriter = Rewriter::new();
        let mut bytewise = Vec::new();
        for byte in &wire {
            rewriter
                .feed(std::slice::from_ref(byte), &mut bytewise)
                .expect("rewrite a byte");
        }
        assert_eq!(whole, bytewise);
        let all = frames(&whole);
        let passed: Vec<Vec<u8>> = [0, 1, 3, 4]
            .iter()
            .map(|&i| {
                let f = &all[i];
                frame(f.frame_type, f.flags, f.stream, &f.payload)
            })
            .collect();
        assert_eq!(passed, [settings, window, empty_data, data]);
        assert_eq!(blocks(&whole).len(), 2);
    }

    /// The I/O wrapper, with its direct path for pass-through payloads,
    /// hands the server exactly what the rewriter produces, whatever the
    /// read sizes.
    #[tokio::test]
    async fn connection_reads_equal_the_rewriter_output() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut encoder = Encoder::default();
        let request = grpc_request(
            Some(GRPCIO_AUTHORITY),
            "/attest.v1.ContentStore/UploadBlobs",
        );
        let mut upload = vec![0u8; 5];
        upload.extend((0..100_000u32).map(|i| i as u8));
        let mut frames_sent = vec![frame(0x4, 0, 0, &[])];
        frames_sent.push(headers(1, &encode(&mut encoder, &request, HUFFMAN | INDEX)));
        for chunk in upload.chunks(16_384) {
            frames_sent.push(frame(0x0, 0, 1, chunk));
        }
        frames_sent.push(frame(0x0, FLAG_END_STREAM, 1, b""));
        frames_sent.push(headers(3, &encode(&mut encoder, &request, HUFFMAN | INDEX)));
        let wire = connection(&frames_sent);
        let expected = rewrite(&wire).expect("rewrite");

        for read_size in [1, 7, 9, 4096, 1 << 20] {
            let (mut client, server) = UnixStream::pair().expect("socket pair");
            let mut server = UdsConnection::new(server);
            let sent = wire.clone();
            let writer = tokio::spawn(async move {
                // Odd write sizes, so reads see frames split anywhere.
                for piece in sent.chunks(1000 + 3) {
                    client.write_all(piece).await.expect("write");
                }
                client.shutdown().await.expect("shutdown");
            });
            let mut got = Vec::new();
            let mut buf = vec![0u8; read_size];
            loop {
                let n = server.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            writer.await.expect("writer");
            assert_eq!(got.len(), expected.len(), "reads of {read_size}");
            assert!(
                got == expected,
                "reads of {read_size} differ from the rewriter's output"
            );
        }
    }

    #[tokio::test]
    async fn connection_closes_on_a_bad_block() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = UnixStream::pair().expect("socket pair");
        let mut server = UdsConnection::new(server);
        client
            .write_all(&connection(&[
                frame(0x6, 0, 0, &[0; 8]),
                headers(1, &[0x80 | 70]),
            ]))
            .await
            .expect("write");
        let mut got = Vec::new();
        let error = loop {
            let mut buf = [0u8; 64];
            match server.read(&mut buf).await {
                Ok(0) => panic!("a clean end instead of an error"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            got.len() <= PREFACE.len() + 17,
            "nothing of the bad block was read"
        );
    }

    /// Corrupted connections, fed whole and in random pieces: never a
    /// panic, and the same result (output or error) however the bytes
    /// are split, so no state leaks between reads.
    #[test]
    fn corrupted_input_in_any_chunking_gives_one_result_and_no_panic() {
        let mut encoder = Encoder::default();
        let request = grpc_request(Some(GRPCIO_AUTHORITY), "/attest.v1.Build/Execute");
        let mut padded = vec![3];
        padded.extend(encode(&mut encoder, &request, HUFFMAN | INDEX));
        padded.extend([0; 3]);
        let block = encode(&mut encoder, &request, INDEX);
        let (a, b) = block.split_at(block.len() / 2);
        let valid = connection(&[
            frame(0x4, 0, 0, &[0, 1, 0, 0, 0x10, 0]),
            frame(TYPE_HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &padded),
            frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\x01x"),
            frame(TYPE_HEADERS, 0, 3, a),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, b),
        ]);
        // xorshift: a fixed sequence, so a failure reproduces.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut errors = 0;
        // 1000 rounds: loona-hpack's Huffman decoding is slow in debug builds.
        for _ in 0..1000 {
            let mut input = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = PREFACE.len() + (next() as usize) % (input.len() - PREFACE.len());
                input[at] = next() as u8;
            }
            let whole = rewrite(&input);
            let mut rewriter = Rewriter::new();
            let mut out = Vec::new();
            let mut rest = &input[..];
            let mut pieces = Ok(());
            while !rest.is_empty() && pieces.is_ok() {
                let n = 1 + (next() as usize) % 64;
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                rest = tail;
                pieces = rewriter.feed(piece, &mut out);
            }
            match (whole, pieces) {
                (Ok(whole), Ok(())) => assert_eq!(whole, out),
                (Err(whole), Err(pieces)) => {
                    errors += 1;
                    assert_eq!(whole, pieces);
                }
                (whole, pieces) => panic!("whole {whole:?}, in pieces {pieces:?}"),
            }
        }
        assert!(
            errors > 100,
            "the corruptions reach the parser ({errors} errors)"
        );
    }

    // Adversarial input: each closes the connection.

    #[test]
    fn not_a_preface_closes() {
        let mut bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        bytes.resize(40, 0);
        assert_eq!(rewrite(&bytes), Err(RewriteError::BadPreface));
    }

    #[test]
    fn frame_inside_a_header_block_closes() {
        let block = encode(&mut Encoder::default(), &grpc_request(None, "/a/B"), 0);
        let (a, b) = block.split_at(10);
        let wire = connection(&[
            frame(TYPE_HEADERS, 0, 1, a),
            frame(0x0, 0, 1, b"x"),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b),
        ]);
        assert_eq!(
            rewrite(&wire),
            Err(RewriteError::InterruptedHeaderBlock {
                frame_type: 0,
                stream: 1,
                block_stream: 1
            })
        );
        let wire = connection(&[
            frame(TYPE_HEADERS, 0, 1, a),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, b),
        ]);
        assert_eq!(
            rewrite(&wire),
            Err(RewriteError::InterruptedHeaderBlock {
                frame_type: TYPE_CONTINUATION,
                stream: 3,
                block_stream: 1
            })
        );
    }

    #[test]
    fn half_a_rewritten_block_is_never_passed_on() {
        // The HEADERS frame came, the block never ended: nothing of it is
        // in the output, only the frames before it.
        let block = encode(
            &mut Encoder::default(),
            &grpc_request(Some(GRPCIO_AUTHORITY), "/a/B"),
            0,
        );
        let ping = frame(0x6, 0, 0, &[0; 8]);
        let out = rewrite(&connection(&[
            ping.clone(),
            frame(TYPE_HEADERS, 0, 1, &block),
        ]))
        .expect("rewrite");
        assert_eq!(out, connection(&[ping]));
    }

    #[test]
    fn continuation_without_headers_closes() {
        let wire = connection(&[frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b"\x82")]);
        assert_eq!(
            rewrite(&wire),
            Err(RewriteError::UnexpectedContinuation { stream: 1 })
        );
    }

    #[test]
    fn push_promise_from_a_client_closes() {
        let wire = connection(&[frame(
            TYPE_PUSH_PROMISE,
            FLAG_END_HEADERS,
            1,
            &[0, 0, 0, 2, 0x82],
        )]);
        assert_eq!(rewrite(&wire), Err(RewriteError::PushPromise { stream: 1 }));
    }

    #[test]
    fn headers_on_stream_zero_closes() {
        let wire = connection(&[headers(0, b"\x82")]);
        assert_eq!(rewrite(&wire), Err(RewriteError::HeadersOnStreamZero));
    }

    #[test]
    fn padding_longer_than_the_payload_closes() {
        let flags = FLAG_PADDED | FLAG_END_HEADERS;
        let wire = connection(&[frame(TYPE_HEADERS, flags, 1, &[9, 0x82, 0x86])]);
        assert_eq!(rewrite(&wire), Err(RewriteError::BadPadding { stream: 1 }));
        let flags = FLAG_PRIORITY | FLAG_END_HEADERS;
        let wire = connection(&[frame(TYPE_HEADERS, flags, 1, &[0, 0, 0])]);
        assert_eq!(rewrite(&wire), Err(RewriteError::BadPadding { stream: 1 }));
    }

    #[test]
    fn endless_continuations_close() {
        let mut wire = vec![frame(TYPE_HEADERS, 0, 1, &[0x82; 16_000])];
        for _ in 0..(MAX_BLOCK_BYTES / 16_000) {
            wire.push(frame(TYPE_CONTINUATION, 0, 1, &[0x82; 16_000]));
        }
        assert_eq!(
            rewrite(&connection(&wire)),
            Err(RewriteError::BlockTooLarge {
                stream: 1,
                limit: MAX_BLOCK_BYTES
            })
        );
    }

    #[test]
    fn indexed_expansion_bomb_closes() {
        // One 4000-byte entry in the dynamic table, then a block of 300
        // one-byte references to it: 1.2 MB decoded from 300 bytes.
        let mut encoder = Encoder::default();
        let big = vec![(b"x-big".to_vec(), vec![b'b'; 4000])];
        let block1 = encode(&mut encoder, &big, INDEX);
        let block2 = vec![0x80 | 62; 300];
        let wire = connection(&[headers(1, &block1), headers(3, &block2)]);
        assert_eq!(
            rewrite(&wire),
            Err(RewriteError::DecodedTooLarge {
                stream: 3,
                limit: MAX_DECODED_BYTES
            })
        );
    }

    #[test]
    fn malformed_hpack_closes_and_stays_closed() {
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        // Index 70 with an empty dynamic table.
        let wire = connection(&[headers(1, &[0x80 | 70])]);
        assert_eq!(
            rewriter.feed(&wire, &mut out),
            Err(RewriteError::Hpack {
                stream: 1,
                source: DecoderError::HeaderIndexOutOfBounds
            })
        );
        assert_eq!(
            rewriter.feed(b"more", &mut out),
            Err(RewriteError::AlreadyClosed)
        );
    }
}
