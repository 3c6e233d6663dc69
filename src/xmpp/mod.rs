//! The XMPP side: the stream codec, the handshake, stanza helpers and the session that keeps
//! the link to the server alive.
pub mod codec;
pub mod handshake;
pub mod session;
pub mod stanza;
