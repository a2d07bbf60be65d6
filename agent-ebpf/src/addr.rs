//! Address conversions between the kernel's context fields and the shared 16-byte form.
use sockmesh_common::v4_mapped;

/// An IPv4 address as read from a context field (network order in memory) in mapped form.
#[inline(always)]
pub fn from_ip4(ip4_nbo: u32) -> [u8; 16] {
    v4_mapped(ip4_nbo.to_ne_bytes())
}

/// An IPv6 address as read from a context field (four network-order words).
#[inline(always)]
pub fn from_ip6(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

/// The four network-order words of a 16-byte address.
#[inline(always)]
pub fn to_ip6_words(ip: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([ip[0], ip[1], ip[2], ip[3]]),
        u32::from_ne_bytes([ip[4], ip[5], ip[6], ip[7]]),
        u32::from_ne_bytes([ip[8], ip[9], ip[10], ip[11]]),
        u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
    ]
}

/// Reads a context field with one load of its own size straight off the context pointer.
///
/// The verifier only allows context loads at a constant offset from the unmodified context
/// pointer; a volatile read keeps LLVM from hoisting the address into a register or merging loads.
macro_rules! ctx_read {
    ($ptr:expr, $($field:tt)+) => {
        // SAFETY: the kernel hands the program a valid context of this type.
        unsafe { core::ptr::read_volatile(&raw const (*$ptr).$($field)+) }
    };
}
pub(crate) use ctx_read;
