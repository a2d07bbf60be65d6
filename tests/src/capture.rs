//! Recording the inter-node wire: an AF_PACKET socket inside the fabric netns sees every frame
//! that enters the fabric bridge from a node's uplink, i.e. all traffic between nodes, once.
//! Tests assert on reassembled TCP payload ("TLS records only", "no plaintext").

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use nix::sched::{CloneFlags, setns};

/// Big enough for GSO frames, which AF_PACKET sees before segmentation.
const FRAME_MAX: usize = 256 * 1024;
/// Lets in-flight frames (e.g. the closing FIN) reach the socket before the capture stops.
const GRACE: Duration = Duration::from_millis(30);
const TCP: u8 = 6;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A running capture; [`WireCapture::finish`] stops it and returns what crossed the wire.
#[derive(Debug)]
pub struct WireCapture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Wire>>>,
}

impl WireCapture {
    /// Starts capturing in the netns at `netns`; returns once the socket is receiving.
    pub(crate) fn start(netns: &Path) -> Result<WireCapture> {
        let ns = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let flag = stop.clone();
        let thread = thread::spawn(move || -> Result<Wire> {
            let sock = setns(&ns, CloneFlags::CLONE_NEWNET)
                .context("setns")
                .and_then(|()| open_socket());
            let sock = match sock {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(Wire::default());
                }
            };
            record(&sock, &flag)
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow!("capture thread died"))??;
        Ok(WireCapture {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the capture and returns the frames and TCP flows seen.
    pub fn finish(mut self) -> Result<Wire> {
        thread::sleep(GRACE);
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<Wire> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().context("capture already finished")?;
        thread
            .join()
            .map_err(|_| anyhow!("capture thread panicked"))?
    }
}

impl Drop for WireCapture {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop_thread();
        }
    }
}

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret < 0 {
        return Err(io::Error::last_os_error()).context(what.to_owned());
    }
    Ok(())
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> Result<()> {
    // SAFETY: value points to a live T of the given size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(ret, "setsockopt")
}

fn open_socket() -> Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    check(raw, "socket(AF_PACKET)")?;
    // SAFETY: raw is a fresh, valid descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // Bulk transfers must not overflow the queue between two polls (root may exceed rmem_max).
    let rcvbuf: libc::c_int = 64 << 20;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf)?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 10_000,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    Ok(fd)
}

fn record(sock: &OwnedFd, stop: &AtomicBool) -> Result<Wire> {
    // SAFETY: static NUL-terminated name.
    let bridge = unsafe { libc::if_nametoindex(c"br0".as_ptr()) } as libc::c_int;
    let mut wire = Wire::default();
    let mut buf = vec![0u8; FRAME_MAX];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let flags = if stopping { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: sockaddr_ll is plain data, valid when zeroed.
        let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut from_len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if stopping => break,
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => {
                    continue;
                }
                _ => return Err(err).context("recvfrom(AF_PACKET)"),
            }
        }
        // Every frame is seen entering the bridge on one port and leaving on another: keep only
        // the entering copy, and ignore what the bridge device itself receives.
        if from.sll_pkttype == libc::PACKET_OUTGOING || from.sll_ifindex == bridge {
            continue;
        }
        wire.push(Frame {
            time: SystemTime::now(),
            data: buf[..n as usize].to_vec(),
        });
    }
    wire.dropped = dropped(sock);
    Ok(wire)
}

fn dropped(sock: &OwnedFd) -> u32 {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: stats is valid for len bytes.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        )
    };
    if ret == 0 { stats.tp_drops } else { 0 }
}

/// One Ethernet frame as captured.
#[derive(Debug, Clone)]
pub struct Frame {
    pub time: SystemTime,
    pub data: Vec<u8>,
}

/// One TCP segment parsed from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Segment {
    fn parse(frame: &[u8]) -> Option<Segment> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let ip = frame.get(14..)?;
        let (src, dst, tcp) = match ethertype {
            0x0800 => {
                let ihl = usize::from(ip.first()? & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
                if *ip.get(9)? != TCP {
                    return None;
                }
                let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
                let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
                let end = total.min(ip.len());
                (
                    IpAddr::from(Ipv4Addr::from(src)),
                    IpAddr::from(Ipv4Addr::from(dst)),
                    ip.get(ihl..end)?,
                )
            }
            0x86dd => {
                let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
                if *ip.get(6)? != TCP {
                    return None;
                }
                let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
                let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
                let end = (40 + len).min(ip.len());
                (
                    IpAddr::from(Ipv6Addr::from(src)),
                    IpAddr::from(Ipv6Addr::from(dst)),
                    ip.get(40..end)?,
                )
            }
            _ => return None,
        };
        let sport = u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]);
        let dport = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
        let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
        let offset = usize::from(tcp.get(12)? >> 4) * 4;
        Some(Segment {
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
            seq,
            flags: *tcp.get(13)?,
            payload: tcp.get(offset..)?.to_vec(),
        })
    }
}

/// One TCP connection seen on the wire, with each direction's payload reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The side that sent the SYN (or the first segment seen).
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub to_server: Vec<u8>,
    pub to_client: Vec<u8>,
}

impl Flow {
    /// Whether either direction contains `needle`.
    pub fn contains(&self, needle: &[u8]) -> bool {
        find(&self.to_server, needle) || find(&self.to_client, needle)
    }

    /// Both directions carry data and all of it is TLS records (what mTLS must look like).
    pub fn is_tls(&self) -> bool {
        !self.to_server.is_empty()
            && !self.to_client.is_empty()
            && is_tls_records(&self.to_server)
            && is_tls_records(&self.to_client)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `bytes` is a sequence of TLS record headers and bodies (the last may be cut off).
pub fn is_tls_records(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(header) = rest.get(..5) else {
            return false;
        };
        let content_type_ok = (20..=23).contains(&header[0]);
        let version_ok = header[1] == 3 && (1..=4).contains(&header[2]);
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if !content_type_ok || !version_ok || len > (1 << 14) + 2048 {
            return false;
        }
        rest = rest.get(5 + len..).unwrap_or_default();
    }
    true
}

/// Everything a capture saw.
#[derive(Debug, Clone, Default)]
pub struct Wire {
    frames: Vec<Frame>,
    segments: Vec<Segment>,
    dropped: u32,
}

impl Wire {
    fn push(&mut self, frame: Frame) {
        if let Some(seg) = Segment::parse(&frame.data) {
            self.segments.push(seg);
        }
        self.frames.push(frame);
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// TCP segments in capture order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Frames the kernel dropped because the capture fell behind (assert 0 for payload checks).
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Whether any flow, in either direction, contains `needle` (also across segment borders).
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.flows().iter().any(|f| f.contains(needle))
    }

    /// TCP connections in order of first appearance; a new SYN on a known 4-tuple starts a new one.
    pub fn flows(&self) -> Vec<Flow> {
        let mut flows: Vec<(SocketAddr, SocketAddr, Vec<&Segment>)> = Vec::new();
        for seg in &self.segments {
            let opening = seg.flags & (SYN | ACK) == SYN;
            let current = flows.iter().rposition(|(c, s, _)| {
                (*c, *s) == (seg.src, seg.dst) || (*c, *s) == (seg.dst, seg.src)
            });
            match current {
                Some(i) if !opening => flows[i].2.push(seg),
                _ => flows.push((seg.src, seg.dst, vec![seg])),
            }
        }
        flows
            .into_iter()
            .map(|(client, server, segs)| Flow {
                client,
                server,
                to_server: reassemble(segs.iter().copied().filter(|s| s.src == client)),
                to_client: reassemble(segs.iter().copied().filter(|s| s.src == server)),
            })
            .collect()
    }

    /// Writes the frames as a classic pcap file (open with tcpdump -r or Wireshark).
    pub fn write_pcap(&self, path: &Path) -> Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        // magic, version 2.4, tz 0, sigfigs 0, snaplen, linktype Ethernet
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        for word in [0u32, 0, FRAME_MAX as u32, 1] {
            out.write_all(&word.to_le_bytes())?;
        }
        for f in &self.frames {
            let ts = f.time.duration_since(UNIX_EPOCH).unwrap_or_default();
            let len = f.data.len() as u32;
            for word in [ts.as_secs() as u32, ts.subsec_micros(), len, len] {
                out.write_all(&word.to_le_bytes())?;
            }
            out.write_all(&f.data)?;
        }
        out.flush()?;
        Ok(())
    }
}

/// Orders one direction's segments by sequence number and drops retransmitted bytes.
fn reassemble<'a>(segs: impl Iterator<Item = &'a Segment>) -> Vec<u8> {
    let segs: Vec<&Segment> = segs.collect();
    let Some(first) = segs.first() else {
        return Vec::new();
    };
    // A SYN consumes one sequence number; data starts after it.
    let base = segs
        .iter()
        .find(|s| s.flags & SYN != 0)
        .map_or(first.seq, |s| s.seq.wrapping_add(1));
    let mut parts: Vec<(i64, &[u8])> = segs
        .iter()
        .filter(|s| !s.payload.is_empty())
        .map(|s| {
            (
                i64::from(s.seq.wrapping_sub(base) as i32),
                s.payload.as_slice(),
            )
        })
        .collect();
    parts.sort_by_key(|(off, _)| *off);
    let mut out = Vec::new();
    let mut next = parts.first().map_or(0, |(off, _)| *off);
    for (off, data) in parts {
        let end = off + data.len() as i64;
        if end <= next {
            continue;
        }
        let skip = (next - off).max(0) as usize;
        out.extend_from_slice(&data[skip..]);
        next = end;
    }
    out
}
