//! Sockets and bytes: upstream sockets made inside a pod's netns, TLS sockets read in large
//! chunks, reused copy buffers, and forwarding (splice between plain sockets, copies otherwise).
pub mod buffered;
pub mod buffers;
pub mod forward;
pub mod splice;
pub mod upstream;
