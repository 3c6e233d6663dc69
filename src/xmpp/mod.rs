//! The XMPP side: the stream reader (codec) and what is written besides stanzas (write), the
//! handshake, stanza helpers and the session that keeps the link to the server alive.
pub mod codec;
pub mod connect;
pub mod handshake;
pub mod session;
pub mod stanza;
pub mod write;
