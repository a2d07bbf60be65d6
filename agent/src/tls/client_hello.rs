//! Just enough of a TLS ClientHello parser to read SNI and ALPN from peeked bytes.
//!
//! Every length is bounds-checked: any input yields a verdict, never a panic.

const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_LEN: usize = 5;
const MAX_RECORD_LEN: usize = 1 << 14;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const SNI_HOST_NAME: u8 = 0;

/// The parts of a ClientHello that decide how an inbound connection is handled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A prefix of a plausible ClientHello; more bytes are needed.
    NeedMore,
    /// Does not start like a TLS handshake record.
    NotTls,
    /// Starts like TLS but is not a well-formed ClientHello.
    Malformed,
    Hello(ClientHello),
}

/// Parses a ClientHello that may span several handshake records.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let mut handshake = Vec::new();
    let mut pos = 0;
    loop {
        let header = &buf[pos..buf.len().min(pos + RECORD_HEADER_LEN)];
        let first_record = pos == 0;
        if header.first().is_some_and(|&t| t != CONTENT_HANDSHAKE)
            || header.get(1).is_some_and(|&v| v != 3)
        {
            return if first_record {
                Parsed::NotTls
            } else {
                Parsed::Malformed
            };
        }
        if header.len() < RECORD_HEADER_LEN {
            return Parsed::NeedMore;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD_LEN {
            return Parsed::Malformed;
        }
        let Some(fragment) = buf.get(pos + RECORD_HEADER_LEN..pos + RECORD_HEADER_LEN + len) else {
            return Parsed::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        pos += RECORD_HEADER_LEN + len;
        if handshake[0] != HANDSHAKE_CLIENT_HELLO {
            return Parsed::Malformed;
        }
        if handshake.len() < 4 {
            continue;
        }
        let body_len = usize::from(handshake[1]) << 16
            | usize::from(handshake[2]) << 8
            | usize::from(handshake[3]);
        if let Some(body) = handshake.get(4..4 + body_len) {
            return parse_body(body).map_or(Parsed::Malformed, Parsed::Hello);
        }
    }
}

/// A bounds-checked cursor over big-endian TLS encodings.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(usize::from(n)).map(Reader)
    }

    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(usize::from(n)).map(Reader)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut hello = ClientHello::default();
    if r.is_empty() {
        return Some(hello);
    }
    let mut extensions = r.vec16()?;
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vec16()?;
        match kind {
            EXT_SERVER_NAME => {
                let mut names = data.vec16()?;
                while !names.is_empty() {
                    let name_type = names.u8()?;
                    let name = names.vec16()?;
                    if name_type == SNI_HOST_NAME && hello.sni.is_none() {
                        hello.sni = std::str::from_utf8(name.0).ok().map(str::to_string);
                    }
                }
            }
            EXT_ALPN => {
                let mut protocols = data.vec16()?;
                while !protocols.is_empty() {
                    hello.alpn.push(protocols.vec8()?.0.to_vec());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
pub(crate) mod tests;
