//! Repairs HTTP/2 requests that Go's gRPC server accepts but the Rust `h2` server rejects.
//!
//! etcdctl 3.4 dials some per-endpoint connections (`endpoint status`, `defrag`, `endpoint hashkv`)
//! with the gRPC target `passthrough:///http://127.0.0.1:2379`, so those requests carry
//! `:authority: http://127.0.0.1:2379`. etcd (Go) ignores it; `h2` resets the stream as a
//! "malformed authority", and has no option to relax that check.
//!
//! [`AuthorityFix`] wraps an accepted connection and rewrites the client→server bytes before h2
//! reads them. The first header block (HEADERS + CONTINUATION frames) is HPACK-decoded: if its
//! `:authority` is valid, as from every client but that dialer, the block and the rest of the
//! connection pass through untouched (a gRPC client uses one authority per connection, and
//! decoding every block costs several percent of a busy server's CPU). Otherwise every header
//! block is decoded by a decoder that mirrors the client's encoder, a bad `:authority` is
//! repaired, and the block is re-encoded with literals that never touch the dynamic table, so
//! h2's decoder keeps an empty table and never sees the client's table references. Every other
//! frame passes through unchanged, and writes (server→client) are not touched at all. Input that is not HTTP/2 with prior knowledge passes
//! through unchanged; a malformed frame or header block is a read error (h2 then drops the
//! connection, as it would have done anyway).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;
/// h2's default SETTINGS_MAX_FRAME_SIZE: no frame we emit is larger.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// Limit on a header block, encoded or decoded; far above hyper's 16 KiB header-list limit.
const MAX_BLOCK: usize = 1 << 20;
/// Largest HPACK dynamic table the client may ask for (h2 itself offers 4096 bytes).
const MAX_TABLE_SIZE: usize = 64 << 10;
const READ_CHUNK: usize = 32 << 10;

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Before the client preface is confirmed.
    Preface,
    /// At a frame boundary.
    FrameHead,
    /// Passing this many more bytes through unchanged.
    Forward(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame; this many bytes still missing.
    HeaderFrame { missing: usize, kind: u8, flags: u8 },
    /// Not HTTP/2 with prior knowledge: pass everything through.
    Raw,
    /// A malformed frame or header block was seen.
    Failed,
}

/// The header block being collected: its HEADERS frame's stream, flags and priority.
struct Pending {
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
}

/// A connection whose incoming HTTP/2 header blocks get a valid `:authority` (see the module doc).
pub struct AuthorityFix<S> {
    inner: S,
    state: State,
    /// Bytes read from `inner`, not yet processed: `input[start..end]`.
    input: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    /// Rewritten frames not yet handed to the reader: `output[out_pos..]`.
    output: Vec<u8>,
    out_pos: usize,
    /// The header block being collected (HEADERS payload first, then CONTINUATION payloads).
    fragment: Vec<u8>,
    pending: Option<Pending>,
    /// Mirrors the client's HPACK encoder.
    decoder: Decoder<'static>,
    /// The first header block's frames as received, while it is collected (`None` afterwards).
    first_block: Option<Vec<u8>>,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection, before any byte of it has been read.
    pub fn new(inner: S) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE_SIZE);
        Self {
            inner,
            state: State::Preface,
            input: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            output: Vec::new(),
            out_pos: 0,
            fragment: Vec::new(),
            pending: None,
            decoder,
            first_block: Some(Vec::new()),
        }
    }

    /// Processes buffered input as far as it goes without handing bytes to the reader; returns
    /// whether anything changed.
    fn step(&mut self) -> io::Result<bool> {
        let avail = &self.input[self.start..self.end];
        match self.state {
            State::Preface => {
                let n = avail.len().min(PREFACE.len());
                if avail[..n] != PREFACE[..n] {
                    self.state = State::Raw;
                } else if n == PREFACE.len() {
                    self.state = State::Forward(n);
                } else {
                    return Ok(false);
                }
            }
            State::FrameHead => {
                if avail.len() < FRAME_HEADER_LEN {
                    return Ok(false);
                }
                let len = usize::from(avail[0]) << 16 | usize::from(avail[1]) << 8 | usize::from(avail[2]);
                let (kind, flags) = (avail[3], avail[4]);
                let stream_id = u32::from_be_bytes([avail[5], avail[6], avail[7], avail[8]]) & 0x7fff_ffff;
                if let Some(pending) = &self.pending {
                    if kind != CONTINUATION || stream_id != pending.stream_id {
                        return Err(malformed("header block interrupted before END_HEADERS"));
                    }
                } else if kind != HEADERS {
                    // Anything else (a stray CONTINUATION included) is h2's business.
                    self.state = State::Forward(FRAME_HEADER_LEN + len);
                    return Ok(true);
                } else {
                    self.fragment.clear();
                    self.pending = Some(Pending { stream_id, flags: flags & (END_STREAM | PRIORITY), priority: None });
                }
                if self.fragment.len() + len > MAX_BLOCK {
                    return Err(malformed("header block too large"));
                }
                if let Some(first) = &mut self.first_block {
                    first.extend_from_slice(&avail[..FRAME_HEADER_LEN]);
                }
                self.start += FRAME_HEADER_LEN;
                self.state = State::HeaderFrame { missing: len, kind, flags };
            }
            State::HeaderFrame { missing, kind, flags } => {
                let n = avail.len().min(missing);
                self.fragment.extend_from_slice(&avail[..n]);
                if let Some(first) = &mut self.first_block {
                    first.extend_from_slice(&avail[..n]);
                }
                self.start += n;
                if n < missing {
                    self.state = State::HeaderFrame { missing: missing - n, kind, flags };
                    return Ok(n > 0);
                }
                self.state = State::FrameHead;
                self.end_header_frame(kind, flags)?;
            }
            State::Forward(_) | State::Raw => return Ok(false),
            State::Failed => return Err(malformed("earlier error")),
        }
        Ok(true)
    }

    /// A HEADERS or CONTINUATION payload has been appended to `fragment`.
    fn end_header_frame(&mut self, kind: u8, flags: u8) -> io::Result<()> {
        let pending = self.pending.as_mut().expect("a header block is pending");
        if kind == HEADERS {
            // Strip padding and the priority fields: the fragment is what is left.
            let mut skip = 0;
            let mut pad = 0;
            if flags & PADDED != 0 {
                pad = usize::from(*self.fragment.first().ok_or_else(|| malformed("bad padding"))?);
                skip = 1;
            }
            if flags & PRIORITY != 0 {
                let fields = self.fragment.get(skip..skip + PRIORITY_LEN).ok_or_else(|| malformed("bad priority"))?;
                pending.priority = Some(fields.try_into().expect("5 bytes"));
                skip += PRIORITY_LEN;
            }
            if skip + pad > self.fragment.len() {
                return Err(malformed("bad padding"));
            }
            self.fragment.truncate(self.fragment.len() - pad);
            self.fragment.drain(..skip);
        }
        if flags & END_HEADERS != 0 {
            let pending = self.pending.take().expect("a header block is pending");
            self.rewrite_block(&pending)?;
        }
        Ok(())
    }

    /// Decodes the complete header block in `fragment` and queues it, re-encoded, as frames; or,
    /// for a first block that needs no repair, queues it as received and passes the rest of the
    /// connection through.
    fn rewrite_block(&mut self, pending: &Pending) -> io::Result<()> {
        let mut block = Vec::with_capacity(self.fragment.len() * 2 + 64);
        let mut decoded_size = 0;
        let mut repaired = false;
        self.decoder
            .decode_with_cb(&self.fragment, |name, value| {
                decoded_size += name.len() + value.len() + 32;
                if decoded_size > MAX_BLOCK {
                    return;
                }
                let value = if &name[..] == b":authority" {
                    let fixed = fixed_authority(&value);
                    repaired |= fixed != Some(&value[..]);
                    fixed
                } else {
                    Some(&value[..])
                };
                if let Some(value) = value {
                    put_literal(&mut block, &name, value);
                }
            })
            .map_err(|e| malformed(&format!("HPACK: {e}")))?;
        if decoded_size > MAX_BLOCK {
            return Err(malformed("header list too large"));
        }
        if self.fragment.capacity() > 4 * MAX_FRAME_PAYLOAD {
            self.fragment = Vec::new();
        }
        match self.first_block.take() {
            Some(received) if !repaired => {
                self.output.extend_from_slice(&received);
                self.state = State::Raw;
            }
            _ => put_frames(&mut self.output, pending, &block),
        }
        Ok(())
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed HTTP/2 input: {what}"))
}

/// What to send for a client's `:authority`: the value itself if h2 accepts it, else the host:port of
/// a URL (`http://127.0.0.1:2379` → `127.0.0.1:2379`), else nothing: the header is optional in
/// HTTP/2 and tonic does not look at it.
fn fixed_authority(value: &[u8]) -> Option<&[u8]> {
    let valid = |v: &[u8]| http::uri::Authority::try_from(v).is_ok();
    if valid(value) {
        return Some(value);
    }
    let after_scheme = value.windows(3).position(|w| w == b"://").map_or(value, |i| &value[i + 3..]);
    let host = after_scheme.split(|&b| b == b'/').next().unwrap_or_default();
    valid(host).then_some(host)
}

/// HPACK integer (RFC 7541 §5.1) with `prefix` bits in a first byte that starts with `flags`.
fn put_int(out: &mut Vec<u8>, mut value: usize, prefix: u8, flags: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push(0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    out.push(value as u8);
}

/// "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2), no Huffman coding.
fn put_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    for s in [name, value] {
        put_int(out, s.len(), 7, 0);
        out.extend_from_slice(s);
    }
}

/// A HEADERS frame plus as many CONTINUATION frames as `block` needs.
fn put_frames(out: &mut Vec<u8>, pending: &Pending, block: &[u8]) {
    let mut rest = block;
    let mut first = true;
    loop {
        let priority = pending.priority.filter(|_| first);
        let prefix = if priority.is_some() { PRIORITY_LEN } else { 0 };
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD - prefix));
        let (kind, mut flags) = if first { (HEADERS, pending.flags) } else { (CONTINUATION, 0) };
        if tail.is_empty() {
            flags |= END_HEADERS;
        }
        let len = (prefix + chunk.len()) as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&pending.stream_id.to_be_bytes());
        out.extend_from_slice(priority.as_ref().map_or(&[][..], |p| &p[..]));
        out.extend_from_slice(chunk);
        if tail.is_empty() {
            return;
        }
        rest = tail;
        first = false;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Rewritten header blocks first.
            if this.out_pos < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.out_pos);
                buf.put_slice(&this.output[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.output.len() {
                    this.output.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            // Then bytes that pass through unchanged, copied once.
            let avail = this.end - this.start;
            let through = match this.state {
                State::Forward(left) => left.min(avail),
                State::Raw => avail,
                _ => 0,
            };
            if through > 0 {
                let n = through.min(buf.remaining());
                buf.put_slice(&this.input[this.start..this.start + n]);
                this.start += n;
                if let State::Forward(left) = this.state {
                    this.state = if left == n { State::FrameHead } else { State::Forward(left - n) };
                }
                return Poll::Ready(Ok(()));
            }
            match this.step() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    this.state = State::Failed;
                    return Poll::Ready(Err(e));
                }
            }
            // Nothing more to do without more input.
            if this.eof {
                // Hand over any truncated frame as it is, then end: h2 reports the truncation.
                this.state = State::Raw;
                if this.start < this.end {
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            if this.start == this.end {
                (this.start, this.end) = (0, 0);
            } else if this.end == this.input.len() {
                this.input.copy_within(this.start..this.end, 0);
                (this.start, this.end) = (0, this.end - this.start);
            }
            let mut read = ReadBuf::new(&mut this.input[this.end..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.eof = true;
            }
            this.end += n;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
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

/// Keeps tonic's connect info (e.g. `TcpConnectInfo` for a `TcpStream`) available to services.
impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const DATA: u8 = 0x0;
    const SETTINGS: u8 = 0x4;
    const RST_STREAM: u8 = 0x3;
    const GOAWAY: u8 = 0x7;
    const AUTHORITY: usize = 1; // static-table index of `:authority`
    const URL: &[u8] = b"http://127.0.0.1:1234";

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream_id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        put_int(out, s.len(), 7, 0);
        out.extend_from_slice(s);
    }

    /// Literal with incremental indexing, name from the static table.
    fn indexed_name(index: usize, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_int(&mut out, index, 6, 0x40);
        string(&mut out, value);
        out
    }

    /// Literal with incremental indexing, new name.
    fn new_name(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40];
        string(&mut out, name);
        string(&mut out, value);
        out
    }

    /// A gRPC-like request block: POST, http, then `rest`.
    fn request_block(rest: &[&[u8]]) -> Vec<u8> {
        let mut block = vec![0x83, 0x86];
        rest.iter().for_each(|r| block.extend_from_slice(r));
        block
    }

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn headers(list: &[(&str, &[u8])]) -> Headers {
        list.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec())).collect()
    }

    /// An inner stream that yields its bytes one at a time.
    struct Trickle(Vec<u8>, usize);

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            if let Some(&b) = self.0.get(self.1) {
                buf.put_slice(&[b]);
                self.1 += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Runs `input` through the adapter in one go, and again trickling bytes in and out one at a
    /// time; both must give the same output, which is returned.
    async fn fix(input: &[u8]) -> io::Result<Vec<u8>> {
        let mut whole = Vec::new();
        AuthorityFix::new(input).read_to_end(&mut whole).await?;
        let mut slow = AuthorityFix::new(Trickle(input.to_vec(), 0));
        let mut trickled = Vec::new();
        let mut byte = [0u8];
        while slow.read(&mut byte).await? == 1 {
            trickled.push(byte[0]);
        }
        assert_eq!(whole, trickled);
        Ok(whole)
    }

    /// Splits the server-side output into frames (after checking the preface).
    fn frames(mut out: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        out = &out[PREFACE.len()..];
        let mut frames = Vec::new();
        while !out.is_empty() {
            let len = usize::from(out[0]) << 16 | usize::from(out[1]) << 8 | usize::from(out[2]);
            let stream_id = u32::from_be_bytes(out[5..9].try_into().unwrap());
            frames.push((out[3], out[4], stream_id, out[9..9 + len].to_vec()));
            out = &out[9 + len..];
        }
        frames
    }

    /// Header blocks in `out` with their HEADERS flags, each decoded without a dynamic table; checks
    /// the frame-size limit and CONTINUATION rules.
    fn blocks(out: &[u8]) -> Vec<(u8, Headers)> {
        let mut result = Vec::new();
        let mut current: Option<(u8, Vec<u8>)> = None;
        for (kind, flags, _, payload) in frames(out) {
            assert!(payload.len() <= MAX_FRAME_PAYLOAD);
            match kind {
                HEADERS => {
                    assert!(current.is_none());
                    assert_eq!(flags & PADDED, 0);
                    let skip = if flags & PRIORITY != 0 { PRIORITY_LEN } else { 0 };
                    current = Some((flags, payload[skip..].to_vec()));
                }
                CONTINUATION => current.as_mut().unwrap().1.extend_from_slice(&payload),
                _ => assert!(current.is_none()),
            }
            if matches!(kind, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
                let (flags, block) = current.take().unwrap();
                // With no dynamic table, any indexing by our encoder would show as a decoding error.
                let mut decoder = Decoder::new();
                decoder.set_max_table_size(0);
                result.push((flags, decoder.decode(&block).unwrap()));
            }
        }
        assert!(current.is_none());
        result
    }

    #[tokio::test]
    async fn rewrites_authority_in_every_block_and_mirrors_the_dynamic_table() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
        // Block 1 adds `:authority: http://…` (then `:path`) to the client's dynamic table.
        let path = new_name(b":path", b"/etcdserverpb.Maintenance/Status");
        let first = request_block(&[&indexed_name(AUTHORITY, URL), &path]);
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        input.extend(frame(DATA, END_STREAM, 1, b"\0\0\0\0\0"));
        // Block 2 refers to both entries: `:path` is 62, `:authority` 63.
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &request_block(&[&[0x80 | 63], &[0x80 | 62]])));

        let out = fix(&input).await.unwrap();
        let expected = headers(&[
            (":method", b"POST"),
            (":scheme", b"http"),
            (":authority", b"127.0.0.1:1234"),
            (":path", b"/etcdserverpb.Maintenance/Status"),
        ]);
        let blocks = blocks(&out);
        assert_eq!(blocks, vec![(END_HEADERS, expected.clone()), (END_HEADERS | END_STREAM, expected)]);
        let frames = frames(&out);
        assert_eq!(frames[0], (SETTINGS, 0, 0, vec![0, 4, 0, 0, 0xff, 0xff]));
        assert_eq!(frames[2], (DATA, END_STREAM, 1, b"\0\0\0\0\0".to_vec()));
        assert_eq!(frames[3].2, 3);
    }

    #[tokio::test]
    async fn joins_continuation_frames() {
        let block = request_block(&[&indexed_name(AUTHORITY, URL), &new_name(b":path", b"/a")]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_STREAM, 5, &block[..3]));
        input.extend(frame(CONTINUATION, 0, 5, &block[3..10]));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, &block[10..]));
        input.extend(frame(DATA, 0, 5, b"x"));

        let out = fix(&input).await.unwrap();
        let expected =
            headers(&[(":method", b"POST"), (":scheme", b"http"), (":authority", b"127.0.0.1:1234"), (":path", b"/a")]);
        assert_eq!(blocks(&out), vec![(END_HEADERS | END_STREAM, expected)]);
        assert_eq!(frames(&out).len(), 2);
    }

    #[tokio::test]
    async fn strips_padding_and_keeps_priority() {
        let block = request_block(&[&indexed_name(AUTHORITY, URL)]);
        let priority = [0x80, 0, 0, 1, 15];
        let mut payload = vec![7];
        payload.extend_from_slice(&priority);
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0; 7]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM | PADDED | PRIORITY, 3, &payload));

        let out = fix(&input).await.unwrap();
        let frames = frames(&out);
        assert_eq!(frames.len(), 1);
        let (kind, flags, stream_id, payload) = &frames[0];
        assert_eq!((*kind, *flags, *stream_id), (HEADERS, END_HEADERS | END_STREAM | PRIORITY, 3));
        assert_eq!(payload[..PRIORITY_LEN], priority);
        let expected = headers(&[(":method", b"POST"), (":scheme", b"http"), (":authority", b"127.0.0.1:1234")]);
        assert_eq!(Decoder::new().decode(&payload[PRIORITY_LEN..]).unwrap(), expected);
    }

    #[tokio::test]
    async fn splits_large_blocks_at_16_kib() {
        let big = vec![b'v'; 40_000];
        let block = request_block(&[&indexed_name(AUTHORITY, URL), &new_name(b"x-big", &big)]);
        let mut input = PREFACE.to_vec();
        let mut chunks = block.chunks(MAX_FRAME_PAYLOAD).peekable();
        let mut kind = HEADERS;
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() { END_HEADERS } else { 0 };
            input.extend(frame(kind, flags, 1, chunk));
            kind = CONTINUATION;
        }

        let out = fix(&input).await.unwrap();
        let kinds: Vec<_> = frames(&out).iter().map(|f| (f.0, f.1, f.3.len())).collect();
        // Literals: 14 + 14 + 27 bytes for `:method`, `:scheme`, `:authority`; 40011 for `x-big`.
        let tail = 14 + 14 + 27 + 40_011 - 2 * MAX_FRAME_PAYLOAD;
        assert_eq!(
            kinds,
            [(HEADERS, 0, MAX_FRAME_PAYLOAD), (CONTINUATION, 0, MAX_FRAME_PAYLOAD), (CONTINUATION, END_HEADERS, tail)]
        );
        let expected =
            headers(&[(":method", b"POST"), (":scheme", b"http"), (":authority", b"127.0.0.1:1234"), ("x-big", &big)]);
        assert!(blocks(&out) == [(0, expected)]);
    }

    /// RFC 7541 C.4: three requests with Huffman-coded strings and a shared dynamic table; a valid
    /// authority in the first leaves the connection as it is.
    #[tokio::test]
    async fn decodes_huffman_and_keeps_valid_authorities() {
        let requests: [&[u8]; 3] = [
            &[0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff],
            &[0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf],
            &[
                0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f, 0x89, 0x25, 0xa8,
                0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
            ],
        ];
        let mut input = PREFACE.to_vec();
        for (i, block) in requests.iter().enumerate() {
            input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i as u32, block));
        }
        // The first block decodes to a valid authority: the connection passes through untouched.
        assert_eq!(fix(&input).await.unwrap(), input);
    }

    /// A first block that needs a repair makes the fixer rewrite every later block too, Huffman
    /// coding and the dynamic table included.
    #[tokio::test]
    async fn after_a_repair_decodes_huffman_and_the_dynamic_table_of_later_blocks() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &request_block(&[&indexed_name(AUTHORITY, URL)])));
        // RFC 7541 C.4.1: Huffman-coded strings, one of them added to the dynamic table.
        let huffman: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, huffman));
        // A reference to that entry (now index 62).
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &[0x82, 0x86, 0x84, 0xbe]));
        let out = fix(&input).await.unwrap();
        let get = [(":method", &b"GET"[..]), (":scheme", b"http"), (":path", b"/"), (":authority", b"www.example.com")];
        let blocks = blocks(&out);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[1], (END_HEADERS | END_STREAM, headers(&get)));
        assert_eq!(blocks[2], (END_HEADERS | END_STREAM, headers(&get)));
    }

    #[test]
    fn repairs_or_drops_bad_authorities() {
        let fixed = |v: &'static str| fixed_authority(v.as_bytes()).map(|f| std::str::from_utf8(f).unwrap());
        assert_eq!(fixed("127.0.0.1:2379"), Some("127.0.0.1:2379"));
        assert_eq!(fixed("localhost"), Some("localhost"));
        assert_eq!(fixed("http://127.0.0.1:2379"), Some("127.0.0.1:2379"));
        assert_eq!(fixed("https://[::1]:2379/"), Some("[::1]:2379"));
        assert_eq!(fixed("example.com:80/path"), Some("example.com:80"));
        assert_eq!(fixed("http://"), None);
        assert_eq!(fixed("bad host"), None);
    }

    #[tokio::test]
    async fn drops_an_unfixable_authority() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &request_block(&[&indexed_name(AUTHORITY, b"a b")])));
        let out = fix(&input).await.unwrap();
        assert_eq!(blocks(&out), vec![(END_HEADERS, headers(&[(":method", b"POST"), (":scheme", b"http")]))]);
    }

    #[tokio::test]
    async fn passes_other_protocols_through() {
        for input in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"PRI * HTTP/1.1", b"", b"PRI"] {
            assert_eq!(fix(input).await.unwrap(), input);
        }
    }

    #[tokio::test]
    async fn truncated_input_ends_without_error() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(DATA, 0, 1, b"abcdef"));
        input.extend(&frame(DATA, 0, 1, b"abcdef")[..7]);
        assert_eq!(fix(&input).await.unwrap(), input);
        // An incomplete header block is dropped.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        assert_eq!(fix(&input).await.unwrap(), PREFACE);
    }

    #[tokio::test]
    async fn malformed_input_is_an_error() {
        let cases: Vec<Vec<u8>> = vec![
            frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]), // padding longer than the frame
            frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0]),  // priority fields missing
            frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]),        // index past the tables
            frame(HEADERS, END_HEADERS, 1, &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff]), // integer overflow
            [frame(HEADERS, 0, 1, &[0x82]), frame(DATA, 0, 1, b"")].concat(), // no CONTINUATION
            [frame(HEADERS, 0, 1, &[0x82]), frame(CONTINUATION, END_HEADERS, 3, &[])].concat(),
            frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xff, 0xff, 0x03]), // table size over the limit
            frame(HEADERS, END_HEADERS, 1, &[0x82, 0x20]),             // size update at the end
            frame(HEADERS, END_HEADERS, 1, &[0x00, 0x81, 0xff, 0x01, b'x']), // bad Huffman code
            frame(HEADERS, 0, 1, &vec![0; MAX_BLOCK + 1]),             // block too large
        ];
        for case in cases {
            let input = [PREFACE, &case].concat();
            let err = fix(&input).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        }
    }

    /// A real h2 server behind the adapter accepts what etcdctl 3.4 sends, and rejects it without.
    #[tokio::test]
    async fn h2_server_accepts_url_authority() {
        assert_eq!(request_over_tcp(true).await, (HEADERS, vec!["127.0.0.1:1234".to_string(); 2]));
        assert_eq!(request_over_tcp(false).await.0, RST_STREAM);
    }

    /// Sends two requests with `:authority: http://127.0.0.1:1234` (the second by dynamic-table
    /// index) to an h2 server; returns the frame type answering the first one (the second gets the
    /// same) and the authorities the server saw.
    async fn request_over_tcp(with_fix: bool) -> (u8, Vec<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut connection = if with_fix {
                h2::server::handshake(Box::new(AuthorityFix::new(tcp)) as Box<dyn Io>).await.unwrap()
            } else {
                h2::server::handshake(Box::new(tcp) as Box<dyn Io>).await.unwrap()
            };
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                seen.push(request.uri().authority().unwrap().to_string());
                respond.send_response(http::Response::new(()), true).unwrap();
            }
            seen
        });

        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[]));
        let first = [0x82, 0x86, 0x84].into_iter().chain(indexed_name(AUTHORITY, URL)).collect::<Vec<_>>();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &first));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x82, 0x86, 0x84, 0x80 | 62]));
        client.write_all(&input).await.unwrap();

        // Read frames until both streams are answered, acknowledging the server's SETTINGS.
        let mut answers = std::collections::HashMap::new();
        while !(answers.contains_key(&1) && answers.contains_key(&3)) {
            let mut head = [0u8; FRAME_HEADER_LEN];
            client.read_exact(&mut head).await.unwrap();
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0; len];
            client.read_exact(&mut payload).await.unwrap();
            let stream_id = u32::from_be_bytes(head[5..9].try_into().unwrap());
            match head[3] {
                SETTINGS if head[4] & 1 == 0 => client.write_all(&frame(SETTINGS, 1, 0, &[])).await.unwrap(),
                GOAWAY => panic!("connection refused: {payload:?}"),
                kind if stream_id != 0 => _ = answers.entry(stream_id).or_insert(kind),
                _ => {}
            }
        }
        drop(client);
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap();
        assert_eq!(answers[&1], answers[&3]);
        (answers[&1], seen)
    }

    trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
}
