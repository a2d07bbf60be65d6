//! The framing of streams on a pooled mesh connection.
//!
//! Every frame is a 4-byte header (kind, then a 24-bit big-endian payload length) and its
//! payload. A stream is `Open` (target port) answered by `Accept` or `Refuse` (a reason for the
//! client's log), then `Data` both ways, each way closed by `End` (a half-close) or cut by `Reset`.
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HEADER: usize = 4;
/// Largest payload the framing allows (24-bit length); data frames carry at most the copy buffer.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Longest refusal reason read; a longer one is a protocol error.
const MAX_REASON: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Data = 0,
    Open = 1,
    Accept = 2,
    Refuse = 3,
    End = 4,
    Reset = 5,
}

impl Kind {
    fn from_u8(b: u8) -> io::Result<Self> {
        Ok(match b {
            0 => Kind::Data,
            1 => Kind::Open,
            2 => Kind::Accept,
            3 => Kind::Refuse,
            4 => Kind::End,
            5 => Kind::Reset,
            other => return Err(invalid(format!("unknown frame kind {other}"))),
        })
    }
}

/// Writes a frame header for `len` payload bytes into `out[..HEADER]`.
pub fn encode_header(kind: Kind, len: usize, out: &mut [u8]) {
    debug_assert!(len <= MAX_PAYLOAD);
    let len = (len as u32).to_be_bytes();
    out[0] = kind as u8;
    out[1..HEADER].copy_from_slice(&len[1..]);
}

/// Reads one frame header; `None` on a clean end of stream before its first byte.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(Kind, usize)>> {
    let mut header = [0u8; HEADER];
    match r.read(&mut header[..1]).await? {
        0 => return Ok(None),
        _ => r.read_exact(&mut header[1..]).await?,
    };
    let kind = Kind::from_u8(header[0])?;
    let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    Ok(Some((kind, len)))
}

/// Writes a frame with no payload and flushes it.
pub async fn write_empty<W: AsyncWrite + Unpin>(w: &mut W, kind: Kind) -> io::Result<()> {
    let mut header = [0u8; HEADER];
    encode_header(kind, 0, &mut header);
    w.write_all(&header).await?;
    w.flush().await
}

/// Asks the server for a stream to `port` of the pod the connection reached.
pub async fn write_open<W: AsyncWrite + Unpin>(w: &mut W, port: u16) -> io::Result<()> {
    let mut frame = [0u8; HEADER + 2];
    encode_header(Kind::Open, 2, &mut frame);
    frame[HEADER..].copy_from_slice(&port.to_be_bytes());
    w.write_all(&frame).await?;
    w.flush().await
}

/// Refuses the stream the client opened; `reason` goes to the client's log.
pub async fn write_refuse<W: AsyncWrite + Unpin>(w: &mut W, reason: &str) -> io::Result<()> {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let mut frame = vec![0u8; HEADER + reason.len()];
    encode_header(Kind::Refuse, reason.len(), &mut frame);
    frame[HEADER..].copy_from_slice(reason);
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads the client's `Open`; `None` when the client closed the idle connection.
pub async fn read_open<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<u16>> {
    match read_header(r).await? {
        None => Ok(None),
        Some((Kind::Open, 2)) => {
            let mut port = [0u8; 2];
            r.read_exact(&mut port).await?;
            Ok(Some(u16::from_be_bytes(port)))
        }
        Some((kind, len)) => Err(invalid(format!(
            "expected an Open frame, got {kind:?} with {len} bytes"
        ))),
    }
}

/// The server's answer to an `Open`.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    Refused(String),
}

pub async fn read_answer<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Answer> {
    match read_header(r).await? {
        Some((Kind::Accept, 0)) => Ok(Answer::Accepted),
        Some((Kind::Refuse, len)) if len <= MAX_REASON => {
            let mut reason = vec![0u8; len];
            r.read_exact(&mut reason).await?;
            Ok(Answer::Refused(
                String::from_utf8_lossy(&reason).into_owned(),
            ))
        }
        None => Err(io::ErrorKind::UnexpectedEof.into()),
        Some((kind, len)) => Err(invalid(format!(
            "expected Accept or Refuse, got {kind:?} with {len} bytes"
        ))),
    }
}

pub fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_and_answers_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_open(&mut a, 9080).await.unwrap();
        assert_eq!(read_open(&mut b).await.unwrap(), Some(9080));
        write_empty(&mut b, Kind::Accept).await.unwrap();
        assert_eq!(read_answer(&mut a).await.unwrap(), Answer::Accepted);
        write_refuse(&mut b, "port 9080 is DISABLE").await.unwrap();
        assert_eq!(
            read_answer(&mut a).await.unwrap(),
            Answer::Refused("port 9080 is DISABLE".into())
        );
        drop(a);
        assert_eq!(read_open(&mut b).await.unwrap(), None);
    }

    #[tokio::test]
    async fn garbage_is_a_clear_error() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[9, 0, 0, 0]).await.unwrap();
        let e = read_open(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("unknown frame kind 9"), "{e}");
        a.write_all(&[0, 0, 0, 3]).await.unwrap();
        let e = read_open(&mut b).await.unwrap_err();
        assert!(e.to_string().contains("expected an Open frame"), "{e}");
    }

    #[test]
    fn header_carries_24_bit_lengths() {
        let mut h = [0u8; HEADER];
        encode_header(Kind::Data, MAX_PAYLOAD, &mut h);
        assert_eq!(h, [0, 0xff, 0xff, 0xff]);
        encode_header(Kind::Data, 65536, &mut h);
        assert_eq!(h, [0, 1, 0, 0]);
    }
}
